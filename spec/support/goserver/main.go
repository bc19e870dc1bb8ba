// goserver: a crypto/tls HTTP server standing in for an etcd peer in
// peerlisten's dial and probe specs (standard library only). It answers
// GET /version and /raft/probing in the shapes etcd uses and prints
// "listening <addr>" once it accepts connections.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "host:port to listen on")
	cert := flag.String("cert", "", "server certificate (empty: plain HTTP)")
	key := flag.String("key", "", "server key")
	ca := flag.String("ca", "", "CA file: require and verify client certificates")
	alpn := flag.String("alpn", "", "comma-separated ALPN protocols (empty: Go's default)")
	maxv := flag.String("max", "", "maximum TLS version (TLS1.2, TLS1.3)")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"etcdserver":"goserver","etcdcluster":""}`)
	})
	mux.HandleFunc("/raft/probing", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(struct {
			OK  bool
			Now time.Time
		}{true, time.Now()})
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ErrorLog: log.New(os.Stderr, "", 0)}
	if *cert == "" {
		fmt.Println("listening", ln.Addr())
		log.Fatal(srv.Serve(ln))
	}
	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		log.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if *maxv == "TLS1.2" {
		cfg.MaxVersion = tls.VersionTLS12
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
	if *alpn != "" {
		cfg.NextProtos = strings.Split(*alpn, ",")
	} else {
		cfg.NextProtos = []string{"http/1.1"}
	}
	fmt.Println("listening", ln.Addr())
	log.Fatal(srv.Serve(tls.NewListener(ln, cfg)))
}
