//! Host bindings of the WIT contract: one module per frozen `wit/since_vX.Y.Z` directory.

/// `corral:agent@0.1.0`, the first and current contract.
pub mod since_v0_1_0 {
    wasmtime::component::bindgen!({
        path: "../../wit/since_v0.1.0",
        world: "agent",
        exports: { default: async },
    });

    /// The export a component must have to implement this version.
    pub const GUEST_EXPORT: &str = "corral:agent/guest@0.1.0";
}

/// The version the host speaks natively; older versions map onto it.
pub use since_v0_1_0 as latest;
