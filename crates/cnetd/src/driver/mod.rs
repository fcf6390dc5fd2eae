//! Network drivers: how each network type is built from kernel objects.
//! NAT, Internal and Private are all a Linux bridge; they differ in the
//! host address, the firewall sets they join, and the sysctls they need.
//! Later types (Transparent, L2Bridge, Overlay) get a module of their own here.

pub mod bridge;
