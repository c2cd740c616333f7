// Command kube is a multi-call binary for the local e2e control plane:
// `kube apiserver|controller-manager|scheduler|kubelet [flags]`. One binary shares
// the compile and the (slow) link of the Kubernetes code they have in common.
// Started by e2e/cluster.sh (the kubelet only with LLMFLEET_REAL_NODE=1, which
// also uses `kube cri-images|cri-reset`, see cri.go).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	commands := map[string]func() *cobra.Command{
		"apiserver":          apiserver.NewAPIServerCommand,
		"controller-manager": controllermanager.NewControllerManagerCommand,
		"scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
		"kubelet":            func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
	}
	if len(os.Args) >= 2 && (os.Args[1] == "cri-images" || os.Args[1] == "cri-reset") {
		os.Exit(criMain(os.Args[1], os.Args[2:]))
	}
	if len(os.Args) < 2 || commands[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: kube apiserver|controller-manager|scheduler|kubelet [flags] | cri-images|cri-reset ENDPOINT")
		os.Exit(2)
	}
	command := commands[os.Args[1]]()
	command.SetArgs(os.Args[2:])
	os.Exit(cli.Run(command))
}
