//! The MLA agents installed into a user cluster's `mla-system` namespace.
