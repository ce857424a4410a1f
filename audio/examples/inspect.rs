//! Prints the identified format and the analysis of each file given on the command line:
//! `cargo run -p callingest-audio --example inspect -- FILE...`
use std::io::Read;

fn main() {
    for arg in std::env::args().skip(1) {
        let path = std::path::Path::new(&arg);
        let mut head = Vec::with_capacity(64);
        let read = std::fs::File::open(path).and_then(|f| f.take(64).read_to_end(&mut head));
        if let Err(e) = read {
            println!("{arg}: {e}");
            continue;
        }
        match callingest_audio::identify(&head) {
            None => println!("{arg}: unknown format"),
            Some(format) => match callingest_audio::analyze(path, format) {
                Ok(a) => println!("{arg}: {format}: {a:#?}"),
                Err(e) => println!("{arg}: {format}: {e}"),
            },
        }
    }
}
