//! The training engines, each an [`Engine`](crate::train::Engine) built on
//! the shared run machinery of [`crate::train`] (never the reverse):
//! [`sequential`], one step after the other (the semantic reference), and
//! [`pipeline`], the same steps on five actor stages.

pub mod pipeline;
pub mod sequential;

pub use pipeline::Pipeline;
pub use sequential::Sequential;
