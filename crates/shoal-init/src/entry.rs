//! The static executable's entry: from the kernel's initial stack to [`crate::main`], and the
//! panic handler a `no_std` executable must have. `_start` itself is in `sys/<arch>.rs`.

use crate::args::{Args, Env};
use crate::{msg, sys, EXIT_INIT_FAILED};

/// Called by `_start` with the initial stack pointer: `argc`, then `argv[argc]` and a NULL,
/// then the environment and a NULL.
///
/// # Safety
///
/// `sp` is the stack pointer the kernel started the process with.
pub(crate) unsafe extern "C" fn start(sp: *const usize) -> ! {
    // SAFETY: the kernel's initial stack layout (System V ABI, both architectures).
    let (args, env) = unsafe {
        let argc = *sp;
        let argv = sp.add(1) as *const *const u8;
        (Args::from_raw(argv), Env::from_raw(argv.add(argc + 1)))
    };
    sys::exit_group(crate::main(args, env))
}

// Only bugs panic (indexing, arithmetic in debug builds): say where, and end with the init's
// failure code. Printing the message would pull in core::fmt.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => msg::error_at(b"internal error", at.file(), at.line()),
        None => msg::error(&[b"internal error"]),
    }
    sys::exit_group(EXIT_INIT_FAILED)
}

/// The unwinding personality routine. The init never unwinds (it is built with panic=abort),
/// but the precompiled `core` is built for unwinding and its frame tables name this symbol.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}
