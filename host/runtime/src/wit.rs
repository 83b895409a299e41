//! Host bindings of the WIT contract: one module per frozen `wit/since_vX.Y.Z` directory, and which version a linked component speaks.

/// `corral:agent@0.1.0`: `host` (log, progress) and the guest exports.
pub mod since_v0_1_0 {
    wasmtime::component::bindgen!({
        path: "../../wit/since_v0.1.0",
        world: "agent",
        exports: { default: async },
    });

    /// The export a component must have to implement this version.
    pub const GUEST_EXPORT: &str = "corral:agent/guest@0.1.0";
}

/// `corral:agent@0.2.0`: adds `model` and the `model` capability.
pub mod since_v0_2_0 {
    wasmtime::component::bindgen!({
        path: "../../wit/since_v0.2.0",
        world: "agent",
        exports: { default: async },
    });

    /// The export a component must have to implement this version.
    pub const GUEST_EXPORT: &str = "corral:agent/guest@0.2.0";
}

/// The version the host speaks natively; older versions map onto it.
pub use since_v0_2_0 as latest;

/// The contract versions this host serves, newest first.
pub const VERSIONS: [&str; 2] = ["0.2.0", "0.1.0"];
