//! `quiesce audit`: checks whether the timing of a workload's manifests adds up.
