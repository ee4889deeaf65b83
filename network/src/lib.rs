//! rill-network: see ../shared/DESIGN.md.
