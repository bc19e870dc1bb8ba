// Command gox509 checks certificates made by peerlisten.cert with Go's
// crypto/x509 and crypto/tls, the stack etcd peers use (standard library only).
//
//	gox509 parse CERT KEY          print the fields Go sees, one "name=value" per line
//	gox509 verify CA CERT KEY HOST verify CERT for serverAuth and clientAuth, then run
//	                               a mutual-TLS handshake over loopback with the pair
package main

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "gox509: "+format+"\n", args...)
	os.Exit(1)
}

func readCert(path string) *x509.Certificate {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		fail("%s: no CERTIFICATE block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		fail("%s: %v", path, err)
	}
	return cert
}

func keyPair(certPath, keyPath string) tls.Certificate {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		fail("key pair: %v", err)
	}
	return pair
}

var usageNames = []struct {
	bit  x509.KeyUsage
	name string
}{
	{x509.KeyUsageDigitalSignature, "digitalSignature"},
	{x509.KeyUsageContentCommitment, "contentCommitment"},
	{x509.KeyUsageKeyEncipherment, "keyEncipherment"},
	{x509.KeyUsageDataEncipherment, "dataEncipherment"},
	{x509.KeyUsageKeyAgreement, "keyAgreement"},
	{x509.KeyUsageCertSign, "keyCertSign"},
	{x509.KeyUsageCRLSign, "cRLSign"},
}

func parse(certPath, keyPath string) {
	cert := readCert(certPath)
	keyPair(certPath, keyPath)
	keyData, err := os.ReadFile(keyPath)
	if err != nil {
		fail("%v", err)
	}
	keyBlock, _ := pem.Decode(keyData)
	fmt.Printf("key_block=%s\n", keyBlock.Type)
	fmt.Printf("version=%d\n", cert.Version)
	fmt.Printf("serial=%x\n", cert.SerialNumber)
	fmt.Printf("serial_bits=%d\n", cert.SerialNumber.BitLen())
	fmt.Printf("subject=%s\n", cert.Subject.String())
	fmt.Printf("issuer=%s\n", cert.Issuer.String())
	fmt.Printf("validity_seconds=%d\n", int64(cert.NotAfter.Sub(cert.NotBefore)/time.Second))
	fmt.Printf("signature_algorithm=%s\n", cert.SignatureAlgorithm)
	switch pub := cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		fmt.Printf("public_key=ECDSA %s\n", pub.Curve.Params().Name)
	case ed25519.PublicKey:
		fmt.Printf("public_key=Ed25519\n")
	case *rsa.PublicKey:
		fmt.Printf("public_key=RSA %d\n", pub.N.BitLen())
	}
	var usages []string
	for _, u := range usageNames {
		if cert.KeyUsage&u.bit != 0 {
			usages = append(usages, u.name)
		}
	}
	fmt.Printf("key_usage=%s\n", strings.Join(usages, ","))
	var ekus []string
	for _, e := range cert.ExtKeyUsage {
		switch e {
		case x509.ExtKeyUsageServerAuth:
			ekus = append(ekus, "serverAuth")
		case x509.ExtKeyUsageClientAuth:
			ekus = append(ekus, "clientAuth")
		default:
			ekus = append(ekus, fmt.Sprint(int(e)))
		}
	}
	fmt.Printf("ext_key_usage=%s\n", strings.Join(ekus, ","))
	fmt.Printf("basic_constraints_valid=%t\n", cert.BasicConstraintsValid)
	fmt.Printf("is_ca=%t\n", cert.IsCA)
	fmt.Printf("subject_key_id=%x\n", cert.SubjectKeyId)
	fmt.Printf("authority_key_id=%x\n", cert.AuthorityKeyId)
	fmt.Printf("dns=%s\n", strings.Join(cert.DNSNames, ","))
	var ips []string
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	fmt.Printf("ips=%s\n", strings.Join(ips, ","))
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		fmt.Printf("self_signature=%v\n", err)
	} else {
		fmt.Printf("self_signature=ok\n")
	}
}

func verify(caPath, certPath, keyPath, host string) {
	ca := readCert(caPath)
	cert := readCert(certPath)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, u := range []struct {
		usage x509.ExtKeyUsage
		name  string
	}{{x509.ExtKeyUsageServerAuth, "serverAuth"}, {x509.ExtKeyUsageClientAuth, "clientAuth"}} {
		opts := x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{u.usage}}
		if u.usage == x509.ExtKeyUsageServerAuth {
			opts.DNSName = host
		}
		if _, err := cert.Verify(opts); err != nil {
			fmt.Printf("verify %s: %v\n", u.name, err)
		} else {
			fmt.Printf("verify %s: ok\n", u.name)
		}
	}
	pair := keyPair(certPath, keyPath)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		fail("listen: %v", err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.WriteString(c, "hello")
		done <- err
	}()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{
		RootCAs:      pool,
		Certificates: []tls.Certificate{pair},
		ServerName:   host,
	})
	if err != nil {
		fmt.Printf("mtls: %v\n", err)
		return
	}
	defer conn.Close()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(conn, buf); err != nil {
		fmt.Printf("mtls: read: %v\n", err)
		return
	}
	if err := <-done; err != nil {
		fmt.Printf("mtls: server: %v\n", err)
		return
	}
	fmt.Printf("mtls: ok %s\n", buf)
}

func main() {
	if len(os.Args) == 4 && os.Args[1] == "parse" {
		parse(os.Args[2], os.Args[3])
	} else if len(os.Args) == 6 && os.Args[1] == "verify" {
		verify(os.Args[2], os.Args[3], os.Args[4], os.Args[5])
	} else {
		fail("usage: gox509 parse CERT KEY | gox509 verify CA CERT KEY HOST")
	}
}
