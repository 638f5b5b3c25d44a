//! ingot's builder: Dockerfile in, reproducible image with its bill of
//! materials out.
//!
//! [`dockerfile`] parses once into types; [`executor`] runs the stages, with
//! [`copy`] planning COPY/ADD and [`run`] running RUN steps in ingot
//! containers; [`layer`] writes deterministic layers; [`context`] keeps
//! sources inside the build context and honours `.dockerignore`; [`bom`] and
//! [`git`] make the answers every image carries.
//!
//! Invariants: a build registers its image (and its tags) only after every
//! step succeeded; the same context, Dockerfile, arguments and epoch give
//! the same manifest digest; no host path outside the context is ever read
//! for COPY/ADD.

pub mod bom;
pub mod context;
mod copy;
pub mod dockerfile;
mod error;
pub mod executor;
pub mod git;
pub mod layer;
pub mod provenance;
mod run;

pub use error::{BuildError, Result};
pub use executor::{build, read_bom, BuildOptions, Built, Progress, Secret, Silent};
