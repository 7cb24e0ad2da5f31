//! The API layer: the `AppStack` resource as users write it ([`crd`]), the
//! condition vocabulary its status speaks ([`conditions`]), and a stack
//! validated and defaulted into what the rest of the operator reads
//! ([`stack`]).

pub mod conditions;
pub mod crd;
pub mod stack;
