//! Example step handlers.
