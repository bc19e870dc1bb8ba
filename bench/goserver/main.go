// goserver: Go crypto/tls + net/http server for the peerlisten benchmark
// (standard library only; run with GOMAXPROCS=1).
//   GET /health -> 200 {"health":"true"}   GET /bulk -> 200, 1 MiB body
// The plain listener (-plain) serves the same plus GET /stats: handshake and
// resumption counters, taken from tls.Config.VerifyConnection (called for
// every completed server handshake, resumed ones included).
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"os"
	"sync/atomic"
)

var handshakes, resumed int64

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "TLS listen address")
	plain := flag.String("plain", "", "plain HTTP listen address (also /stats)")
	cert := flag.String("cert", "", "certificate")
	key := flag.String("key", "", "key")
	ca := flag.String("ca", "", "CA for client certificates (mutual TLS)")
	tickets := flag.Bool("tickets", true, "session tickets (Go's default: on)")
	flag.Parse()

	bulk := make([]byte, 1<<20)
	for i := range bulk {
		bulk[i] = 'x'
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"health":"true"}`))
	})
	mux.HandleFunc("/bulk", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", "1048576")
		w.Write(bulk)
	})
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]int64{
			"handshakes": atomic.LoadInt64(&handshakes),
			"resumed":    atomic.LoadInt64(&resumed),
		})
	})

	if *plain != "" {
		go func() { log.Fatal(http.ListenAndServe(*plain, mux)) }()
	}
	if *cert == "" {
		select {}
	}
	kp, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		log.Fatal(err)
	}
	cfg := &tls.Config{
		Certificates:           []tls.Certificate{kp},
		MinVersion:             tls.VersionTLS12,
		SessionTicketsDisabled: !*tickets,
		VerifyConnection: func(cs tls.ConnectionState) error {
			atomic.AddInt64(&handshakes, 1)
			if cs.DidResume {
				atomic.AddInt64(&resumed, 1)
			}
			return nil
		},
	}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			log.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	srv := &http.Server{Addr: *addr, Handler: mux, TLSConfig: cfg,
		ErrorLog: log.New(os.Stderr, "", 0)}
	srv.SetKeepAlivesEnabled(true)
	// no HTTP/2: the load client speaks HTTP/1.1 only
	srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	log.Fatal(srv.ListenAndServeTLS("", ""))
}
