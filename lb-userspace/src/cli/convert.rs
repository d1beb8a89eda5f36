//! `herald convert-configmap`: MetalLB ≤ 0.12 ConfigMap → `metallb.io` objects on stdout (the
//! conversion itself is `config::convert`, pure and tested there).

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::config::convert;

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// The ConfigMap manifest (`data.config` holds the legacy configuration); `-` reads stdin.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// The file holds only the legacy configuration text (the ConfigMap's `data.config`).
    #[arg(long = "only-data")]
    pub only_data: bool,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let source = args.file.display().to_string();
    let text = if source == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("reading {source}"))?
    };
    let converted = match convert::convert_input(&text, &source, args.only_data) {
        Ok(converted) => converted,
        Err(e) => {
            // An input error, not a crash: say it plainly and exit non-zero.
            eprintln!("herald convert-configmap: {e}");
            std::process::exit(1)
        }
    };
    for note in &converted.notes {
        eprintln!("note: {note}");
    }
    print!("{}", converted.to_yaml()?);
    Ok(())
}
