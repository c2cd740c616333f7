// Command streams is the gateway bench's stream load generator: it opens SSE completions at a
// fixed rate (-rate) or from a fixed number of workers back to back (-rate 0 -workers N), for
// -duration, and prints one JSON object: streams done, failures by status, the time to the
// first body byte (TTFT) and to the end of the stream, in milliseconds. With -keys, each stream
// carries one of the keys (Authorization: Bearer), in turn.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type result struct {
	ttft, total time.Duration
	failure     string
}

type report struct {
	Seconds  float64            `json:"seconds"`
	Sent     int                `json:"sent"`
	Ok       int                `json:"ok"`
	PerSec   float64            `json:"ok_per_second"`
	Failures map[string]int     `json:"failures"`
	TTFT     map[string]float64 `json:"ttft_ms"`
	Total    map[string]float64 `json:"total_ms"`
}

func percentiles(values []time.Duration) map[string]float64 {
	out := map[string]float64{}
	if len(values) == 0 {
		return out
	}
	sort.Slice(values, func(i, j int) bool { return values[i] < values[j] })
	for _, q := range []float64{50, 90, 99} {
		i := int(q / 100 * float64(len(values)-1))
		out["p"+strconv.Itoa(int(q))] = float64(values[i].Microseconds()) / 1000
	}
	return out
}

type load struct {
	urls   []string
	bodies [][]byte
	keys   []string // API keys, sent as "Authorization: Bearer KEY"; none when empty
}

func one(client *http.Client, l load, turn *atomic.Int64) result {
	n := int(turn.Add(1))
	req, err := http.NewRequest(http.MethodPost, l.urls[n%len(l.urls)], bytes.NewReader(l.bodies[n%len(l.bodies)]))
	if err != nil {
		return result{failure: "request"}
	}
	req.Header.Set("Content-Type", "application/json")
	if len(l.keys) > 0 {
		req.Header.Set("Authorization", "Bearer "+l.keys[n%len(l.keys)])
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return result{failure: "connection"}
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, resp.Body)
		return result{failure: strconv.Itoa(resp.StatusCode)}
	}
	reader := bufio.NewReader(resp.Body)
	if _, err := reader.Peek(1); err != nil {
		return result{failure: "empty"}
	}
	ttft := time.Since(start)
	rest, err := io.ReadAll(reader)
	if err != nil || !bytes.Contains(rest, []byte("[DONE]")) {
		return result{failure: "truncated"}
	}
	return result{ttft: ttft, total: time.Since(start)}
}

func main() {
	urls := flag.String("url", "", "the completions URL (comma-separated: taken in turn)")
	bodyFile := flag.String("body", "", "file of JSON request bodies (stream: true), one a line, taken in turn")
	rate := flag.Float64("rate", 0, "streams opened per second; 0: -workers back to back")
	workers := flag.Int("workers", 64, "with -rate 0: streams in flight")
	duration := flag.Duration("duration", 5*time.Second, "how long to open streams")
	keys := flag.String("keys", "", "API keys (comma-separated: taken in turn); none by default")
	flag.Parse()
	text, err := os.ReadFile(*bodyFile)
	bodies := bytes.Split(bytes.TrimSpace(text), []byte("\n"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	client := &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns: 10000, MaxIdleConnsPerHost: 10000, DisableCompression: true,
		},
	}
	l := load{urls: strings.Split(*urls, ","), bodies: bodies}
	if *keys != "" {
		l.keys = strings.Split(*keys, ",")
	}
	var turn atomic.Int64
	var (
		mu      sync.Mutex
		results []result
		wg      sync.WaitGroup
	)
	record := func(r result) {
		mu.Lock()
		results = append(results, r)
		mu.Unlock()
	}
	start := time.Now()
	sent := 0
	if *rate > 0 {
		interval := time.Duration(float64(time.Second) / *rate)
		for next := start; time.Since(start) < *duration; next = next.Add(interval) {
			time.Sleep(time.Until(next))
			sent++
			wg.Add(1)
			go func() { defer wg.Done(); record(one(client, l, &turn)) }()
		}
	} else {
		var count sync.Mutex
		for w := 0; w < *workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(start) < *duration {
					count.Lock()
					sent++
					count.Unlock()
					record(one(client, l, &turn))
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	out := report{Seconds: elapsed, Sent: sent, Failures: map[string]int{}}
	var ttfts, totals []time.Duration
	for _, r := range results {
		if r.failure != "" {
			out.Failures[r.failure]++
			continue
		}
		out.Ok++
		ttfts = append(ttfts, r.ttft)
		totals = append(totals, r.total)
	}
	out.PerSec = float64(out.Ok) / elapsed
	out.TTFT, out.Total = percentiles(ttfts), percentiles(totals)
	json.NewEncoder(os.Stdout).Encode(out)
}
