// Command kstatus prints the verdict of kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status),
// the library Flux and kpt read resource health with, for each object it is given.
//
//	kstatus [FILE...]    # no FILE, or "-": standard input
//
// Input is YAML or JSON, several objects per file ("---" between YAML documents, or a
// v1 List). Output is one JSON object per input object, in order:
//
//	{"kind":"LLMDeployment","name":"llama","status":"Current","message":"Resource is current"}
//
// Exit 0 when every object was read and computed, 1 otherwise. Built and cached by
// build.sh; used by tests/gitops to check that an LLMDeployment's status reads the way
// the operator means it.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	paths := os.Args[1:]
	if len(paths) == 0 {
		paths = []string{"-"}
	}
	out := json.NewEncoder(os.Stdout)
	failed := false
	for _, path := range paths {
		if err := computeFile(path, out); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %s: %v\n", path, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func computeFile(path string, out *json.Encoder) error {
	var in io.Reader = os.Stdin
	if path != "-" {
		file, err := os.Open(path)
		if err != nil {
			return err
		}
		defer file.Close()
		in = file
	}
	decoder := yaml.NewYAMLOrJSONDecoder(bufio.NewReader(in), 4096)
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if len(raw) == 0 || string(raw) == "null" {
			continue // an empty YAML document
		}
		// Decoded the way the API machinery does, so integers stay int64.
		var object map[string]any
		if err := utiljson.Unmarshal(raw, &object); err != nil {
			return err
		}
		u := &unstructured.Unstructured{Object: object}
		items := []unstructured.Unstructured{*u}
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				return err
			}
			items = list.Items
		}
		for i := range items {
			result, err := status.Compute(&items[i])
			if err != nil {
				return fmt.Errorf("%s %s: %w", items[i].GetKind(), items[i].GetName(), err)
			}
			err = out.Encode(verdict{
				Kind:    items[i].GetKind(),
				Name:    items[i].GetName(),
				Status:  result.Status.String(),
				Message: result.Message,
			})
			if err != nil {
				return err
			}
		}
	}
}
