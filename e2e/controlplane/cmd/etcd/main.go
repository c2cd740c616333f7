// Command etcd is the etcd server at the version the wrapper module pins
// (the one Kubernetes itself is tested with). Started by e2e/cluster.sh.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
