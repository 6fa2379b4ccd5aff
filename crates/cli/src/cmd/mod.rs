//! One module per subcommand: argument definitions next to the code that runs them.

pub mod audit;
pub mod drain;
pub mod sandbox;
