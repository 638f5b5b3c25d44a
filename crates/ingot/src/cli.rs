//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "ingot", version, about = "Immutable service delivery: build, sign, scan, ship and run images", long_about = None)]
pub struct Cli {
    /// Store root directory [default: /var/lib/ingot as root, else $XDG_DATA_HOME/ingot]
    #[arg(long, global = true, env = "INGOT_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Output format of listing and inspect commands
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Print only essential output (digests, IDs)
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    Gzip,
    None,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import a root filesystem tarball (tar or tar.gz) as a one-layer image
    Import {
        /// Tarball path, or - for standard input
        file: PathBuf,
        /// NAME[:TAG] to give the image
        reference: String,
        /// Layer compression
        #[arg(long, value_enum, default_value_t = Compression::Gzip)]
        compression: Compression,
    },
    /// List images
    Images,
    /// Show an image's manifest, config and layers
    Inspect {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Point a new NAME[:TAG] at an existing image
    Tag { source: String, target: String },
    /// Remove tags or images (blobs are freed by the GC pass that follows)
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
        /// Remove an image by digest even if several tags point at it
        #[arg(short, long)]
        force: bool,
        /// Do not collect unreferenced blobs afterwards
        #[arg(long)]
        no_prune: bool,
    },
    /// Write images to an archive that is both an OCI layout and a docker-save tar
    Save {
        #[arg(required = true)]
        images: Vec<String>,
        /// Output file (default: standard output)
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Load images from an OCI layout or docker-save archive (tar or tar.gz)
    Load {
        /// Input file (default: standard input)
        #[arg(short, long)]
        input: Option<PathBuf>,
    },
    /// Write an image's root filesystem (all layers applied) into a directory
    Unpack {
        image: String,
        /// Empty or missing target directory
        dir: PathBuf,
    },
    /// Remove blobs no image references, and stale temp files
    Gc {
        /// Report what would be removed without removing it
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-hash every blob and check every image's references
    Fsck,
}
