//! The CARP election state machine: roles, timers, preemption, pacified, authentication, replay windows
