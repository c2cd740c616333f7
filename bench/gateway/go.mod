module llmfleet.io/bench/gateway

go 1.22
