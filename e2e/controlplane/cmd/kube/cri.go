package main

// Two small CRI clients for the real node's container runtime, for e2e/node.py
// (Debian has no crictl):
//   kube cri-images ENDPOINT   print "<image id> <repo tag>" per tag the runtime holds
//   kube cri-reset ENDPOINT    stop and remove every pod sandbox (and so its containers)
// A sandbox is stopped through the runtime, not killed, so its network is torn
// down by the CNI plugins (veth, IP address) and its network namespace removed.

import (
	"context"
	"fmt"
	"os"
	"time"

	remote "k8s.io/cri-client/pkg"
)

func criMain(command string, args []string) int {
	if len(args) != 1 {
		fmt.Fprintf(os.Stderr, "usage: kube %s unix:///path/to/containerd.sock\n", command)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	switch command {
	case "cri-images":
		err = listImages(ctx, args[0])
	case "cri-reset":
		err = resetSandboxes(ctx, args[0])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", command, err)
		return 1
	}
	return 0
}

func listImages(ctx context.Context, endpoint string) error {
	images, err := remote.NewRemoteImageService(endpoint, 10*time.Second, nil, nil)
	if err != nil {
		return err
	}
	listed, err := images.ListImages(ctx, nil)
	if err != nil {
		return err
	}
	for _, image := range listed {
		for _, tag := range image.RepoTags {
			fmt.Printf("%s %s\n", image.Id, tag)
		}
	}
	return nil
}

func resetSandboxes(ctx context.Context, endpoint string) error {
	runtime, err := remote.NewRemoteRuntimeService(endpoint, 10*time.Second, nil, nil)
	if err != nil {
		return err
	}
	sandboxes, err := runtime.ListPodSandbox(ctx, nil)
	if err != nil {
		return err
	}
	for _, sandbox := range sandboxes {
		if err := runtime.StopPodSandbox(ctx, sandbox.Id); err != nil {
			return fmt.Errorf("stopping sandbox of pod %s/%s: %w", sandbox.Metadata.Namespace, sandbox.Metadata.Name, err)
		}
		if err := runtime.RemovePodSandbox(ctx, sandbox.Id); err != nil {
			return fmt.Errorf("removing sandbox of pod %s/%s: %w", sandbox.Metadata.Namespace, sandbox.Metadata.Name, err)
		}
	}
	fmt.Printf("removed %d pod sandboxes\n", len(sandboxes))
	return nil
}
