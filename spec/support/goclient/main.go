// goclient: a crypto/tls client for peerlisten's interop specs (standard
// library only).  It dials, handshakes, optionally writes a line and reads
// the reply, and prints one JSON object describing what happened.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

type result struct {
	OK          bool   `json:"ok"`
	Stage       string `json:"stage,omitempty"`
	Error       string `json:"error,omitempty"`
	Version     string `json:"version,omitempty"`
	Cipher      string `json:"cipher,omitempty"`
	ALPN        string `json:"alpn,omitempty"`
	PeerSubject string `json:"peer_subject,omitempty"`
	PeerSerial  string `json:"peer_serial,omitempty"`
	Reply       string `json:"reply,omitempty"`
}

var versions = map[string]uint16{
	"TLS1.0": tls.VersionTLS10, "TLS1.1": tls.VersionTLS11,
	"TLS1.2": tls.VersionTLS12, "TLS1.3": tls.VersionTLS13,
}

func versionName(v uint16) string {
	for n, id := range versions {
		if id == v {
			return n
		}
	}
	return fmt.Sprintf("0x%04x", v)
}

func emit(r result) {
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}

func main() {
	addr := flag.String("addr", "127.0.0.1:2380", "host:port, or a unix socket path with -unix")
	unix := flag.Bool("unix", false, "dial a unix socket")
	ca := flag.String("ca", "", "CA file to verify the server with (empty: skip verification)")
	cert := flag.String("cert", "", "client certificate")
	key := flag.String("key", "", "client key")
	minv := flag.String("min", "", "minimum version (TLS1.0..TLS1.3)")
	maxv := flag.String("max", "", "maximum version")
	ciphers := flag.String("ciphers", "", "comma-separated Go cipher suite names (TLS 1.0-1.2)")
	alpn := flag.String("alpn", "", "comma-separated ALPN protocols")
	sni := flag.String("servername", "", "SNI")
	send := flag.String("send", "", "a line to write after the handshake")
	timeout := flag.Duration("timeout", 5*time.Second, "overall I/O timeout")
	flag.Parse()

	cfg := &tls.Config{ServerName: *sni}
	if *ca == "" {
		cfg.InsecureSkipVerify = true
	} else {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			emit(result{Stage: "config", Error: err.Error()})
			os.Exit(2)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		cfg.RootCAs = pool
	}
	if *cert != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			emit(result{Stage: "config", Error: err.Error()})
			os.Exit(2)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if v, ok := versions[*minv]; ok {
		cfg.MinVersion = v
	}
	if v, ok := versions[*maxv]; ok {
		cfg.MaxVersion = v
	}
	if *ciphers != "" {
		byName := map[string]uint16{}
		for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
			byName[s.Name] = s.ID
		}
		for _, n := range strings.Split(*ciphers, ",") {
			id, ok := byName[n]
			if !ok {
				emit(result{Stage: "config", Error: "unknown cipher " + n})
				os.Exit(2)
			}
			cfg.CipherSuites = append(cfg.CipherSuites, id)
		}
	}
	if *alpn != "" {
		cfg.NextProtos = strings.Split(*alpn, ",")
	}

	network := "tcp"
	if *unix {
		network = "unix"
		if cfg.ServerName == "" {
			cfg.ServerName = "localhost"
		}
	} else if cfg.ServerName == "" {
		if h, _, err := net.SplitHostPort(*addr); err == nil {
			cfg.ServerName = h
		}
	}
	raw, err := net.DialTimeout(network, *addr, *timeout)
	if err != nil {
		emit(result{Stage: "dial", Error: err.Error()})
		os.Exit(1)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(*timeout))
	conn := tls.Client(raw, cfg)
	if err := conn.Handshake(); err != nil {
		emit(result{Stage: "handshake", Error: err.Error()})
		os.Exit(1)
	}
	st := conn.ConnectionState()
	r := result{OK: true, Version: versionName(st.Version), Cipher: tls.CipherSuiteName(st.CipherSuite),
		ALPN: st.NegotiatedProtocol}
	if len(st.PeerCertificates) > 0 {
		r.PeerSubject = st.PeerCertificates[0].Subject.String()
		r.PeerSerial = fmt.Sprintf("%x", st.PeerCertificates[0].SerialNumber)
	}
	if *send != "" {
		if _, err := io.WriteString(conn, *send+"\n"); err != nil {
			r.OK, r.Stage, r.Error = false, "write", err.Error()
			emit(r)
			os.Exit(1)
		}
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		r.Reply = string(buf[:n])
		if err != nil && n == 0 {
			r.OK, r.Stage, r.Error = false, "read", err.Error()
			emit(r)
			os.Exit(1)
		}
	}
	emit(r)
}
