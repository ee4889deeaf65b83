//! rill-endpoints: see ../shared/DESIGN.md.
