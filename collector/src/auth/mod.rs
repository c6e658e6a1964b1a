//! Authentication and authorisation for the HTTP API: permissions and roles, password
//! hashing and policy (`[auth]`), and the bearer credentials (API tokens and sessions).

pub mod credential;
pub mod password;
pub mod permission;
pub mod restriction;
pub mod settings;
pub mod totp;

pub use permission::{
    builtin_roles, from_names, grants, permission_names, Grant, Permission, Principal, Scope,
};
