// Command engine is the gateway bench's engine stand-in: an OpenAI-compatible server cheap
// enough never to be the bottleneck, so that what a bench measures is the proxy in front.
//
// It answers /v1/completions and /v1/chat/completions (JSON with usage; or SSE: -chunks
// chunks, the first at once and the others -chunk-delay apart, then a usage chunk when
// stream_options.include_usage is set, then [DONE]), /v1/models, /health, and /metrics with
// the vLLM gauges the gateway and vllm-router scrape. With -slots, at most that many requests
// run at once and the others wait in arrival order (an engine's batch and its queue); with
// -latency, a non-streaming answer takes that long (the overload step's slow engines).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"sync/atomic"
	"time"
)

type request struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

type server struct {
	model      string
	chunks     int
	chunkDelay time.Duration
	tokens     int
	latency    time.Duration
	slots      chan struct{}
	running    atomic.Int64
	waiting    atomic.Int64
}

// admit waits for a slot when the engine has a bounded batch; it returns the release.
func (s *server) admit() func() {
	if s.slots == nil {
		s.running.Add(1)
		return func() { s.running.Add(-1) }
	}
	s.waiting.Add(1)
	s.slots <- struct{}{}
	s.waiting.Add(-1)
	s.running.Add(1)
	return func() { s.running.Add(-1); <-s.slots }
}

func (s *server) completion(chat bool) http.HandlerFunc {
	object, choice := "text_completion", `{"index":0,"text":" fleet","finish_reason":"length"}`
	if chat {
		object = "chat.completion"
		choice = `{"index":0,"message":{"role":"assistant","content":" fleet"},"finish_reason":"length"}`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var req request
		if err == nil {
			err = json.Unmarshal(body, &req)
		}
		if err != nil {
			http.Error(w, `{"error":{"message":"bad json","type":"invalid_request_error"}}`, 400)
			return
		}
		defer s.admit()()
		prompt := len(body) / 4
		usage := fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`,
			prompt, s.tokens, prompt+s.tokens)
		if !req.Stream {
			if s.latency > 0 {
				time.Sleep(s.latency)
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"cmpl-bench","object":%q,"created":0,"model":%q,"choices":[%s],"usage":%s}`,
				object, req.Model, choice, usage)
			return
		}
		s.stream(w, r, &req, chat, usage)
	}
}

func (s *server) stream(w http.ResponseWriter, r *http.Request, req *request, chat bool, usage string) {
	object, delta := "text_completion", `"text":" fleet"`
	if chat {
		object, delta = "chat.completion.chunk", `"delta":{"content":" fleet"}`
	}
	w.Header().Set("Content-Type", "text/event-stream")
	flusher := w.(http.Flusher)
	for i := 0; i < s.chunks; i++ {
		if i > 0 {
			select {
			case <-time.After(s.chunkDelay):
			case <-r.Context().Done():
				return
			}
		}
		finish := "null"
		if i == s.chunks-1 {
			finish = `"length"`
		}
		fmt.Fprintf(w, "data: {\"id\":\"cmpl-bench\",\"object\":%q,\"model\":%q,\"choices\":[{\"index\":0,%s,\"finish_reason\":%s}]}\n\n",
			object, req.Model, delta, finish)
		flusher.Flush()
	}
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		fmt.Fprintf(w, "data: {\"id\":\"cmpl-bench\",\"object\":%q,\"model\":%q,\"choices\":[],\"usage\":%s}\n\n",
			object, req.Model, usage)
	}
	io.WriteString(w, "data: [DONE]\n\n")
}

func (s *server) metrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	running, waiting := s.running.Load(), s.waiting.Load()
	label := fmt.Sprintf(`{engine="0",model_name=%q}`, s.model)
	fmt.Fprintf(w, "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running%s %d\n", label, running)
	fmt.Fprintf(w, "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting%s %d\n", label, waiting)
	fmt.Fprintf(w, "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc%s %g\n", label, float64(running)/1000)
}

func main() {
	port := flag.Int("port", 8000, "port to listen on (127.0.0.1)")
	s := &server{}
	flag.StringVar(&s.model, "model", "m", "the served model name")
	flag.IntVar(&s.chunks, "chunks", 16, "content chunks per stream")
	flag.DurationVar(&s.chunkDelay, "chunk-delay", 5*time.Millisecond, "time between chunks")
	flag.IntVar(&s.tokens, "tokens", 16, "completion tokens reported in usage")
	flag.DurationVar(&s.latency, "latency", 0, "time a non-streaming answer takes")
	slots := flag.Int("slots", 0, "requests running at once (0: no bound)")
	flag.Parse()
	if *slots > 0 {
		s.slots = make(chan struct{}, *slots)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/completions", s.completion(false))
	mux.HandleFunc("/v1/chat/completions", s.completion(true))
	mux.HandleFunc("/metrics", s.metrics)
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) })
	mux.HandleFunc("/v1/models", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"list","data":[{"id":%q,"object":"model","created":0,"owned_by":"vllm","root":%q}]}`, s.model, s.model)
	})
	log.Fatal(http.ListenAndServe(fmt.Sprintf("127.0.0.1:%d", *port), mux))
}
