//! Git sources for imgpack: `git+URL[@REV][#SUBDIR]` parsed ([`GitSource`]),
//! exactly that revision fetched and checked out into a directory
//! ([`fetch`]), and the facts a repository gives an image ([`HeadFacts`]),
//! all with gitoxide, so no `git` executable is needed (an image holding
//! imgpack can build from git on its own).

mod budget;
mod checkout;
mod credentials;
mod facts;
mod fetch;
mod spec;

pub use budget::Limits;
pub use credentials::{GitAuth, Login, UrlOrigin};
pub use facts::HeadFacts;
pub use fetch::{fetch, Checkout};
pub use spec::{GitSource, Transport};
