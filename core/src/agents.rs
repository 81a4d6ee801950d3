//! What the views need of the agents that serve `proc/sys` and the network devices in a
//! caller's namespaces. The daemon's pool (one worker per namespace set, in the `nsview`
//! crate) implements it; the views never see how requests reach an agent.

use nsview_proto::agent::{Op, Payload};

use crate::error::Result;
use crate::ns::NsKey;

/// The agents, as the views use them.
pub trait Agents: std::fmt::Debug + Send + Sync {
    /// The daemon's own namespaces (kinds equal to these are not joined).
    fn own(&self) -> &NsKey;

    /// The namespaces of task `tid`.
    fn key_of(&self, tid: u32) -> Result<NsKey>;

    /// Performs `op` in the namespaces `key` of task `tid`.
    fn request(&self, tid: u32, key: NsKey, op: Op) -> Result<Payload>;

    /// The cookie of the network namespace of `key` (which task `tid` is in), as its agent
    /// reported it: `None` on kernels without `SO_NETNS_COOKIE`.
    fn netns_cookie(&self, tid: u32, key: NsKey) -> Result<Option<u64>>;

    /// Agents alive now.
    fn alive(&self) -> usize;
}
