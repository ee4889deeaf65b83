//! rill-dataflow: see ../shared/DESIGN.md.
