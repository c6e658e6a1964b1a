//! Read queries for the HTTP API's hosts routes (run on a `Reader` via `Reader::run`).
