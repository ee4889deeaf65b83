//! rill-state: see ../shared/DESIGN.md.
