//! The command line and the environment, as the kernel passed them: NULL-terminated arrays of
//! NUL-terminated strings that live as long as the process.

use core::ffi::CStr;

/// `shoal-init --help`.
pub(crate) const USAGE: &[u8] = b"usage: shoal-init [--] PROGRAM [ARGS...]

Runs PROGRAM as the child of a minimal init: signals are forwarded to it, zombies
are reaped, and the exit status is PROGRAM's (128 + signal if it was killed).
";

/// `argv[0]` with which the runtime starts this binary (from a sealed memfd) as the last step
/// before a container's program: it then only execs the program. Running the runtime's own
/// binary at that point would let a container reach it through `/proc/self/exe`
/// (CVE-2019-5736); this tiny binary, sealed in memory, is harmless to reach.
pub const DMZ_NAME: &[u8] = b"shoal-dmz";

/// A NULL-terminated array of C strings (`argv` or `envp`).
#[derive(Clone, Copy)]
struct Vector(*const *const u8);

impl Vector {
    fn iter(self) -> impl Iterator<Item = &'static CStr> {
        let mut next = self.0;
        core::iter::from_fn(move || {
            // SAFETY: the array is NULL-terminated (constructor contract) and next never moves
            // past the terminator.
            let s = unsafe { *next };
            if s.is_null() {
                return None;
            }
            // SAFETY: as above; s is a NUL-terminated string living for the whole process.
            next = unsafe { next.add(1) };
            // SAFETY: s is a NUL-terminated string living for the whole process.
            Some(unsafe { c_str(s) })
        })
    }

    /// The array from element `n` on (still NULL-terminated), if it has `n` elements.
    fn skip(self, n: usize) -> Option<Vector> {
        if self.iter().count() < n {
            return None;
        }
        // SAFETY: the array has at least n elements before its terminator.
        Some(Vector(unsafe { self.0.add(n) }))
    }
}

/// `CStr::from_ptr` without the libc `strlen` it calls.
///
/// # Safety
///
/// `s` is a NUL-terminated string that lives for the rest of the process.
unsafe fn c_str(s: *const u8) -> &'static CStr {
    let mut len = 0;
    // SAFETY: every byte up to and including the NUL is readable.
    while unsafe { *s.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: len + 1 bytes are readable and the last one is the only NUL.
    unsafe { CStr::from_bytes_with_nul_unchecked(core::slice::from_raw_parts(s, len + 1)) }
}

/// The command line (`argv`).
#[derive(Clone, Copy)]
pub struct Args(Vector);

impl Args {
    /// # Safety
    ///
    /// `argv` is a NULL-terminated array of NUL-terminated strings that live for the rest of
    /// the process, like the one the kernel puts on the initial stack.
    pub unsafe fn from_raw(argv: *const *const u8) -> Args {
        Args(Vector(argv))
    }

    fn get(self, n: usize) -> Option<&'static CStr> {
        self.0.iter().nth(n)
    }
}

/// The environment (`envp`).
#[derive(Clone, Copy)]
pub struct Env(Vector);

impl Env {
    /// # Safety
    ///
    /// As [`Args::from_raw`], for `envp`.
    pub unsafe fn from_raw(envp: *const *const u8) -> Env {
        Env(Vector(envp))
    }

    /// The value of the first `key=value` entry.
    pub(crate) fn get(self, key: &[u8]) -> Option<&'static [u8]> {
        self.0.iter().find_map(|entry| {
            let entry = entry.to_bytes();
            let rest = entry.strip_prefix(key)?;
            rest.strip_prefix(b"=")
        })
    }

    pub(crate) fn as_ptr(self) -> *const *const u8 {
        (self.0).0
    }
}

/// The program to run: its name (`argv[0]` of the child) and its whole argument vector.
#[derive(Clone, Copy)]
pub(crate) struct Program {
    pub(crate) name: &'static CStr,
    argv: Vector,
}

impl Program {
    /// The child's NULL-terminated `argv`, for `execve`.
    pub(crate) fn argv(self) -> *const *const u8 {
        self.argv.0
    }
}

/// What the command line asks for.
pub(crate) enum Invocation {
    Run(Program),
    /// Started as [`DMZ_NAME`] by the runtime: exec the program directly, no init.
    Exec(Program),
    Help,
    /// A usage error: what is wrong, and the argument it is about (possibly empty).
    Usage(&'static [u8], &'static [u8]),
}

/// Parses `shoal-init [--] PROGRAM [ARGS...]` (`-h`/`--help` too). Any other argument starting
/// with `-` before `--` is an error, which keeps room for options (tini's `-g`, `-s`...).
pub(crate) fn parse(args: Args) -> Invocation {
    match args.get(0).map(CStr::to_bytes) {
        // `DMZ_NAME PATH ARGV0 ARGS...`: the runtime's last step into the container.
        Some(DMZ_NAME) => {
            return match (args.get(1), args.0.skip(2)) {
                (Some(name), Some(argv)) if argv.iter().next().is_some() => {
                    Invocation::Exec(Program { name, argv })
                }
                _ => Invocation::Usage(b"dmz: no program given", b""),
            }
        }
        // A script whose interpreter line is `#!/proc/self/exe` would run us again, forever.
        Some(b"/proc/self/exe") => {
            return Invocation::Usage(b"refusing to run as a script's interpreter", b"")
        }
        _ => {}
    }
    let first = match args.get(1).map(CStr::to_bytes) {
        Some(b"--") => 2,
        Some(b"-h" | b"--help") => return Invocation::Help,
        Some(option) if option.len() > 1 && option[0] == b'-' => {
            return Invocation::Usage(b"unknown option ", option)
        }
        _ => 1,
    };
    match (args.get(first), args.0.skip(first)) {
        (Some(name), Some(argv)) => Invocation::Run(Program { name, argv }),
        _ => Invocation::Usage(b"no program given", b""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    /// A leaked NULL-terminated array of C strings, as the kernel would pass it.
    fn vector(items: &[&str]) -> *const *const u8 {
        let mut ptrs: Vec<*const u8> = items
            .iter()
            .map(|s| CString::new(*s).unwrap().into_raw() as *const u8)
            .collect();
        ptrs.push(std::ptr::null());
        Box::leak(ptrs.into_boxed_slice()).as_ptr()
    }

    fn parse_strs(items: &[&str]) -> Invocation {
        // SAFETY: vector returns a leaked NULL-terminated array of C strings.
        parse(unsafe { Args::from_raw(vector(items)) })
    }

    fn program_argv(program: Program) -> Vec<String> {
        program
            .argv
            .iter()
            .map(|s| s.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn the_program_starts_after_the_optional_double_dash() {
        for line in [
            &["shoal-init", "--", "sh", "-c", "exit 3"][..],
            &["shoal-init", "sh", "-c", "exit 3"][..],
        ] {
            let Invocation::Run(program) = parse_strs(line) else {
                panic!("{line:?} runs a program")
            };
            assert_eq!(program.name.to_bytes(), b"sh");
            assert_eq!(program_argv(program), ["sh", "-c", "exit 3"]);
        }
        let Invocation::Run(program) = parse_strs(&["shoal-init", "--", "-x"]) else {
            panic!("after --, a leading dash is a program name")
        };
        assert_eq!(program_argv(program), ["-x"]);
    }

    #[test]
    fn usage_errors_and_help() {
        assert!(matches!(
            parse_strs(&["shoal-init"]),
            Invocation::Usage(b"no program given", _)
        ));
        assert!(matches!(
            parse_strs(&["shoal-init", "--"]),
            Invocation::Usage(b"no program given", _)
        ));
        assert!(matches!(
            parse_strs(&["shoal-init", "-g", "sh"]),
            Invocation::Usage(_, b"-g")
        ));
        assert!(matches!(
            parse_strs(&["shoal-init", "--help"]),
            Invocation::Help
        ));
        assert!(matches!(
            parse_strs(&["shoal-init", "-h", "sh"]),
            Invocation::Help
        ));
    }

    #[test]
    fn env_lookup_matches_whole_keys() {
        // SAFETY: vector returns a leaked NULL-terminated array of C strings.
        let env = unsafe {
            Env::from_raw(vector(&[
                "PATHS=no",
                "PATH=/bin:/usr/bin",
                "PATH=second",
                "EMPTY=",
            ]))
        };
        assert_eq!(env.get(b"PATH"), Some(&b"/bin:/usr/bin"[..]));
        assert_eq!(env.get(b"EMPTY"), Some(&b""[..]));
        assert_eq!(env.get(b"HOME"), None);
    }
}
