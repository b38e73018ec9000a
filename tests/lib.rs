//! Helpers shared by the end-to-end tests live in `helper/`; this library target only exists so the package builds.
