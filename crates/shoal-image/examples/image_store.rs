//! Drive an image store from the shell, for manual checks against docker and for benchmarks.
//!
//! ```text
//! cargo run --release -p shoal-image --example image_store -- ROOT load FILE|-
//! cargo run --release -p shoal-image --example image_store -- ROOT save FILE|- REF...
//! cargo run --release -p shoal-image --example image_store -- ROOT list
//! cargo run --release -p shoal-image --example image_store -- ROOT rmi REF
//! ```

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Instant;

use shoal_image::ImageStore;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, verb, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: image_store ROOT load FILE|- | save FILE|- REF... | list | rmi REF".into(),
        );
    };
    let store = ImageStore::open(Path::new(root))?;
    let started = Instant::now();
    match (verb.as_str(), rest) {
        ("load", [file]) => {
            let input: Box<dyn Read> = if file == "-" {
                Box::new(io::stdin().lock())
            } else {
                Box::new(File::open(file)?)
            };
            for image in store.load(input)? {
                println!("loaded {} {:?}", image.id, image.names);
            }
        }
        ("save", [file, refs @ ..]) => {
            let output: Box<dyn Write> = if file == "-" {
                Box::new(io::stdout().lock())
            } else {
                Box::new(File::create(file)?)
            };
            store.save(refs, output)?;
        }
        ("list", []) => {
            for image in store.list()? {
                println!("{} {:>12} {:?}", image.id, image.size, image.names);
            }
        }
        ("rmi", [reference]) => {
            for removed in store.remove(reference, false, &|_| None)? {
                println!("{removed:?}");
            }
        }
        _ => return Err(format!("unknown command {verb} {rest:?}").into()),
    }
    eprintln!("{verb}: {:?}", started.elapsed());
    Ok(())
}
