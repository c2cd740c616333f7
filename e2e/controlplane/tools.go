//go:build tools

// Package tools keeps the LeaderWorkerSet controller's main package in the
// module graph (`go mod tidy` would drop it otherwise); build.sh builds it
// straight from the sigs.k8s.io/lws module with this module's replaces.
package tools

import (
	_ "sigs.k8s.io/lws/cmd"
)
