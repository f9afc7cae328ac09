// Command mock-oidc runs github.com/oauth2-proxy/mockoidc (the OIDC provider oauth2-proxy's
// own tests use) as a process, for the IAP tests: a fixed client id and secret, the
// provider on --listen (issuer http://<listen>/oidc), and on --control a small API that
// chooses who signs in next.
//
//	POST /users  {"email": "alice@example.com"}   queues the next user (subject = email)
//	GET  /healthz                                 200 once both listeners serve
//
// With no user queued, mockoidc signs in its DefaultUser (jane.doe@example.com).
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net"
	"net/http"

	"github.com/oauth2-proxy/mockoidc"
)

type queuedUser struct {
	Email    string   `json:"email"`
	Subject  string   `json:"subject"`
	Groups   []string `json:"groups"`
	Verified *bool    `json:"email_verified"`
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address of the OIDC provider")
	control := flag.String("control", "127.0.0.1:0", "address of the control API (POST /users)")
	clientID := flag.String("client-id", "mla-alertmanager", "the only client id the provider accepts")
	clientSecret := flag.String("client-secret", "s3cr3t", "that client's secret")
	flag.Parse()

	m, err := mockoidc.NewServer(nil)
	if err != nil {
		log.Fatalf("mockoidc: %v", err)
	}
	m.ClientID, m.ClientSecret = *clientID, *clientSecret
	// Every provider request is logged, so a test's log shows the whole sign-in.
	_ = m.AddMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			log.Printf("%s %s", r.Method, r.URL.Path)
			next.ServeHTTP(w, r)
		})
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen %s: %v", *listen, err)
	}
	if err := m.Start(ln, nil); err != nil {
		log.Fatalf("start: %v", err)
	}
	log.Printf("issuer %s client %s", m.Issuer(), m.ClientID)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("POST /users", func(w http.ResponseWriter, r *http.Request) {
		var u queuedUser
		if err := json.NewDecoder(r.Body).Decode(&u); err != nil || u.Email == "" {
			http.Error(w, "want {\"email\": ...}", http.StatusBadRequest)
			return
		}
		user := &mockoidc.MockUser{
			Subject:           u.Subject,
			Email:             u.Email,
			EmailVerified:     u.Verified == nil || *u.Verified,
			PreferredUsername: u.Email,
			Groups:            u.Groups,
		}
		if user.Subject == "" {
			user.Subject = u.Email
		}
		m.QueueUser(user)
		log.Printf("queued user %s", u.Email)
		w.WriteHeader(http.StatusNoContent)
	})
	cl, err := net.Listen("tcp", *control)
	if err != nil {
		log.Fatalf("listen %s: %v", *control, err)
	}
	log.Printf("control on http://%s", cl.Addr())
	log.Fatal(http.Serve(cl, mux))
}
