//! Network-namespace test harness: hosts on a bridge, processes inside namespaces, fault injection, teardown
