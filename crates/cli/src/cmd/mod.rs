//! One module per subcommand.

pub mod apply;
pub mod down;
pub mod export;
pub mod inspect;
pub mod plan;
pub mod status;
pub mod supervise;
pub mod validate;
