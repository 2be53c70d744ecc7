// The soak's load generator (docs/reliability.md): signed-in browsers against the live harness.
// Standard library only.
module authproxy.local/loadgen

go 1.25.0
