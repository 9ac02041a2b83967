//! `shoal-testkit`: the test kit's fixtures for shell scripts (the README quickstart, benchmarks).
//!
//! ```text
//! shoal-testkit busybox-image -o FILE [--name NAME]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: shoal-testkit busybox-image -o FILE [--name NAME]";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("shoal-testkit: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let mut args = args.into_iter();
    match args.next().as_deref() {
        Some("busybox-image") => {}
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return Ok(());
        }
        _ => bail!("{USAGE}"),
    }
    let mut output: Option<PathBuf> = None;
    let mut name: Option<String> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-o" | "--output" => output = args.next().map(PathBuf::from),
            "--name" => name = args.next(),
            _ => bail!("unexpected argument {arg:?}\n{USAGE}"),
        }
    }
    let Some(output) = output else {
        bail!("missing -o FILE\n{USAGE}");
    };
    let image = match name {
        Some(name) => shoal_testkit::busybox_image_with(serde_json::Value::Null, &name)?,
        None => shoal_testkit::busybox_image()?,
    };
    std::fs::copy(&image, &output)
        .with_context(|| format!("copying {} to {}", image.display(), output.display()))?;
    Ok(())
}
