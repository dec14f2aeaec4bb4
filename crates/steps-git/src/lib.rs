//! The git-clone step: clone (or fetch) a repository into provision's cache, check out a ref
//! (tag, branch, full or abbreviated commit), reset and clean the checkout (provision owns it),
//! update submodules; and, before it runs, the commit the ref points at now as a fact (a tag
//! resolved before is taken from `${cache}/refs.json` unless refs are refreshed).
//!
//! Credentials in repository URLs never appear in logs, errors or outputs.

mod checkout;
mod credentials;
mod error;
mod facts;
mod git;
mod refs;
pub mod tag_cache;

pub use checkout::run;
pub use error::GitError;
pub use facts::facts;
pub use refs::{nearest, RefKind};
pub use tag_cache::{RefLookup, TagCache};
