//! Which contract version a linked component speaks (0.2.0 or 0.1.0), and the calls that differ between versions: `describe` and the guest export's name.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use crate::describe::Declared;
use crate::sandbox::HostState;
use crate::wit::{since_v0_1_0 as v0_1, since_v0_2_0 as v0_2};

/// A component linked as the newest contract version it implements.
pub(crate) enum Contract {
    V0_1(v0_1::AgentPre<HostState>),
    V0_2(v0_2::AgentPre<HostState>),
}

impl Contract {
    /// Links `pre` as 0.2.0, else as 0.1.0; the error says why neither fits.
    pub fn new(pre: InstancePre<HostState>) -> Result<Self, String> {
        match v0_2::AgentPre::new(pre.clone()) {
            Ok(p) => Ok(Contract::V0_2(p)),
            Err(e2) => v0_1::AgentPre::new(pre)
                .map(Contract::V0_1)
                .map_err(|e1| format!("as 0.2.0: {e2:#}; as 0.1.0: {e1:#}")),
        }
    }

    /// `0.2.0` or `0.1.0`.
    pub fn version(&self) -> &'static str {
        match self {
            Contract::V0_1(_) => "0.1.0",
            Contract::V0_2(_) => "0.2.0",
        }
    }

    /// The guest interface's export name in this version.
    pub fn guest_export(&self) -> &'static str {
        match self {
            Contract::V0_1(_) => v0_1::GUEST_EXPORT,
            Contract::V0_2(_) => v0_2::GUEST_EXPORT,
        }
    }

    pub fn instance_pre(&self) -> &InstancePre<HostState> {
        match self {
            Contract::V0_1(p) => p.instance_pre(),
            Contract::V0_2(p) => p.instance_pre(),
        }
    }

    /// Instantiates and calls `describe`; `Err(true, _)` failed while
    /// instantiating, `Err(false, _)` in the call.
    pub async fn describe(
        &self,
        store: &mut Store<HostState>,
    ) -> Result<Declared, (bool, wasmtime::Error)> {
        match self {
            Contract::V0_1(p) => {
                let b = p
                    .instantiate_async(&mut *store)
                    .await
                    .map_err(|e| (true, e))?;
                let info = b.corral_agent_guest().call_describe(&mut *store).await;
                info.map(Into::into).map_err(|e| (false, e))
            }
            Contract::V0_2(p) => {
                let b = p
                    .instantiate_async(&mut *store)
                    .await
                    .map_err(|e| (true, e))?;
                let info = b.corral_agent_guest().call_describe(&mut *store).await;
                info.map(Into::into).map_err(|e| (false, e))
            }
        }
    }
}
