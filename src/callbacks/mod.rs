//! Partner callbacks (being written).
