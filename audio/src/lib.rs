//! Recording format identification and audio analytics (placeholder, being written).
