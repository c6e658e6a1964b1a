//! Read queries for the HTTP API's alerts routes (run on a `Reader` via `Reader::run`).
