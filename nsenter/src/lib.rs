//! nsview's agent: its command line ([`args`]), how it joins a caller's namespaces and hides the host from them ([`join`]),
//! and how it executes requests there ([`ops`]). The binary `nsview-nsenter` puts these
//! together.
#![warn(missing_docs)]

pub mod args;
pub mod join;
pub mod ops;
