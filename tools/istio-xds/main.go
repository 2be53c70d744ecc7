// istio-xds: Istio's own translation of a folder of rendered objects into the
// Envoy v3 configuration istiod would push, for the harness.
//
// It runs istiod's config generation in-process through Istio's test support
// package pilot/test/xds (FakeDiscoveryServer): the same PushContext, listener,
// route, cluster and endpoint builders a real istiod runs. No cluster is needed.
//
// Usage:
//
//	istio-xds -in DIR [-out FILE]
//
// DIR holds:
//
//	*.yaml        Istio and Kubernetes objects (multi-document). Istio kinds
//	              (*.istio.io) become istiod config; Pods, Services,
//	              EndpointSlices, Namespaces, Secrets and Gateway API objects
//	              (gateway.networking.k8s.io) feed the Kubernetes client that
//	              istiod's registry and Gateway API controller read; every
//	              other kind is listed on stderr and ignored.
//	mesh-config.yaml   the MeshConfig (istiod's `mesh` ConfigMap value)
//	proxies.json  the proxies to generate for: a list of
//	              {"name", "type": "router"|"sidecar"|"waypoint"|"ztunnel",
//	               "namespace", "ip", "labels"}
//
// The output (stdout or -out) is one JSON document:
//
//	{"istio_version": ..., "ambient": BOOL, "proxies": {NAME: {"listeners": [...],
//	  "routes": [...], "clusters": [...], "endpoints": [...]}}}
//
// with every list sorted by name so the output is deterministic. Istio's own
// logging goes to stderr.
//
// Ambient mode: a "waypoint" proxy is a waypoint Envoy (model.Waypoint: the
// pods istiod deploys for a Gateway of class istio-waypoint, found by their
// gateway.networking.k8s.io/gateway-name label); a "ztunnel" entry is what
// istiod pushes to a ztunnel over delta xDS (its real generators):
// {"addresses": [istio.workload.Address...], "authorizations":
// [istio.security.Authorization...]}, as proto JSON. Either needs istiod's
// ambient mode (PILOT_ENABLE_AMBIENT=true, as the ambient profile sets it);
// the binary re-executes itself with it when the proxies ask for ambient.
// Istio objects then also feed the Kubernetes client, where istiod's ambient
// index reads AuthorizationPolicies, PeerAuthentications and ServiceEntries.
package main

import (
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"istio.io/istio/pilot/pkg/features"
	"istio.io/istio/pilot/pkg/model"
	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/constants"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/schema/gvk"
	istiolog "istio.io/istio/pkg/log"
	"istio.io/istio/pkg/test"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

// istioVersion is stamped at build time (-X main.istioVersion=...): the
// istio.io/istio module version this binary is built from.
var istioVersion = "unknown"

// proxyIstioVersion is the IstioVersion the generated proxies claim in their
// node metadata (istiod gates some features on it).
var proxyIstioVersion = "1.31.0"

type proxySpec struct {
	Name      string            `json:"name"`
	Type      string            `json:"type"`
	Namespace string            `json:"namespace"`
	IP        string            `json:"ip"`
	Labels    map[string]string `json:"labels"`
}

// kubeKinds are the Kubernetes kinds istiod's registry reads here.
var kubeKinds = map[string]bool{
	"Pod": true, "Service": true, "EndpointSlice": true, "Namespace": true, "Secret": true,
}

// gatewayAPIGroup: Gateway API objects (Gateway, HTTPRoute, ReferenceGrant,
// GatewayClass) reach istiod as Kubernetes objects, read by its Gateway API
// controller (pilot/pkg/config/kube/gateway), as in a cluster.
const gatewayAPIGroup = "gateway.networking.k8s.io"

type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

func splitDocs(text string) []string {
	var out []string
	for _, d := range strings.Split("\n"+text, "\n---") {
		if strings.TrimSpace(d) != "" {
			out = append(out, strings.TrimLeft(d, "\n"))
		}
	}
	return out
}

// ambientEnv is istiod's switch for ambient mode; it is read once at start-up
// (pilot/pkg/features), so the process must be started with it.
const ambientEnv = "PILOT_ENABLE_AMBIENT"

// needsAmbient reports whether the proxies include ambient ones (a waypoint or
// ztunnel).
func needsAmbient(specs []proxySpec) bool {
	for _, sp := range specs {
		if sp.Type == "waypoint" || sp.Type == "ztunnel" {
			return true
		}
	}
	return false
}

// readInputs returns the Istio config, the Kubernetes objects and whether there
// are Gateway API objects. With ambient, the Istio objects are also Kubernetes
// objects: istiod's ambient index reads policies from the cluster's client.
func readInputs(dir string, ambient bool) (istioCfg, kubeObjs string, gatewayAPI, ingressGateways bool, err error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return "", "", false, false, err
	}
	sort.Strings(files)
	var icfg, kobjs []string
	for _, f := range files {
		if filepath.Base(f) == "mesh-config.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return "", "", false, false, err
		}
		for _, doc := range splitDocs(string(b)) {
			var h header
			if err := yaml.Unmarshal([]byte(doc), &h); err != nil {
				return "", "", false, false, fmt.Errorf("%s: %v", f, err)
			}
			if h.Kind == "" {
				continue
			}
			group := strings.SplitN(h.APIVersion, "/", 2)[0]
			switch {
			case strings.HasSuffix(group, "istio.io") && strings.Contains(h.APIVersion, "/"):
				icfg = append(icfg, doc)
				if ambient {
					kobjs = append(kobjs, doc)
				}
			case kubeKinds[h.Kind] || group == gatewayAPIGroup:
				kobjs = append(kobjs, doc)
				gatewayAPI = gatewayAPI || group == gatewayAPIGroup
				if group == gatewayAPIGroup && h.Kind == "Gateway" {
					// A waypoint (class istio-waypoint) is no ingress: istiod's
					// conversion gives it no Gateway servers.
					var gw struct {
						Spec struct {
							GatewayClassName string `json:"gatewayClassName"`
						} `json:"spec"`
					}
					if err := yaml.Unmarshal([]byte(doc), &gw); err != nil {
						return "", "", false, false, fmt.Errorf("%s: %v", f, err)
					}
					ingressGateways = ingressGateways || gw.Spec.GatewayClassName != constants.WaypointGatewayClassName
				}
			default:
				fmt.Fprintf(os.Stderr, "istio-xds: ignoring %s %s (not read by istiod's config generation)\n", h.APIVersion, h.Kind)
			}
		}
	}
	return strings.Join(icfg, "\n---\n"), strings.Join(kobjs, "\n---\n"), gatewayAPI, ingressGateways, nil
}

// settleGatewayAPI waits until istiod's Gateway API controller has converted the
// Gateway API objects. The controller's collections only compute once a push
// context exists (PushContext init calls its Reconcile) and then update
// asynchronously, feeding the next push; a real istiod pushes again on those
// events. Here: push and wait until the converted Gateways and
// VirtualServices are there and their content is unchanged over several pushes.
// The content, not the list: List's order and the ResourceVersions it stamps
// may change between pushes while the converted config does not.
func settleGatewayAPI(t test.Failer, s *xds.FakeDiscoveryServer, expectGateways bool) error {
	gwc := s.Env().GatewayAPIController
	if gwc == nil {
		return fmt.Errorf("Gateway API objects given, but istiod's Gateway API controller is off")
	}
	deadline := time.Now().Add(60 * time.Second)
	last, stable, changes := "", 0, 0
	for time.Now().Before(deadline) {
		s.Discovery.ConfigUpdate(&model.PushRequest{Forced: true, Reason: model.NewReasonStats(model.ConfigUpdate)})
		s.EnsureSynced(t)
		gws := gwc.List(gvk.Gateway, metav1.NamespaceAll)
		vss := gwc.List(gvk.VirtualService, metav1.NamespaceAll)
		state, err := convertedState(gws, vss)
		if err != nil {
			return err
		}
		if (len(gws) > 0 || !expectGateways) && state == last {
			stable++
			if stable >= 3 {
				fmt.Fprintf(os.Stderr, "istio-xds: Gateway API converted: %d gateway servers, %d virtual services (%d changes seen)\n", len(gws), len(vss), changes)
				return nil
			}
		} else {
			stable = 0
			changes++
			fmt.Fprintf(os.Stderr, "istio-xds: Gateway API conversion now: %s\n", state)
		}
		last = state
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("istiod's Gateway API controller produced no stable Gateway config within 60s (%d changes; last: %s); see the log for the Gateway's status", changes, last)
}

// convertedState names each converted config by namespace/name and a digest of
// its spec (deterministic proto encoding), sorted.
func convertedState(gws, vss []config.Config) (string, error) {
	entries := make([]string, 0, len(gws)+len(vss))
	for _, c := range append(append([]config.Config{}, gws...), vss...) {
		m, ok := c.Spec.(proto.Message)
		if !ok {
			return "", fmt.Errorf("converted %s %s/%s: spec %T is not a proto message", c.GroupVersionKind.Kind, c.Namespace, c.Name, c.Spec)
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			return "", fmt.Errorf("converted %s %s/%s: %v", c.GroupVersionKind.Kind, c.Namespace, c.Name, err)
		}
		sum := sha256.Sum256(b)
		entries = append(entries, fmt.Sprintf("%s %s/%s#%x", c.GroupVersionKind.Kind, c.Namespace, c.Name, sum[:6]))
	}
	sort.Strings(entries)
	return fmt.Sprintf("%d/%d %s", len(gws), len(vss), strings.Join(entries, " ")), nil
}

// nameOf is the xDS resource name: Name for listeners, routes and clusters,
// ClusterName for endpoints (ClusterLoadAssignment).
func nameOf(m proto.Message) string {
	switch v := m.(type) {
	case interface{ GetName() string }:
		return v.GetName()
	case interface{ GetClusterName() string }:
		return v.GetClusterName()
	}
	return ""
}

func marshalAll[T proto.Message](msgs []T) ([]json.RawMessage, error) {
	sort.SliceStable(msgs, func(i, j int) bool { return nameOf(msgs[i]) < nameOf(msgs[j]) })
	out := make([]json.RawMessage, 0, len(msgs))
	opts := protojson.MarshalOptions{UseProtoNames: true}
	for _, m := range msgs {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("marshal %s: %v", nameOf(m), err)
		}
		out = append(out, json.RawMessage(b))
	}
	return out, nil
}

func run(t test.Failer, in string) (map[string]any, error) {
	meshText, err := os.ReadFile(filepath.Join(in, "mesh-config.yaml"))
	if err != nil {
		return nil, err
	}
	mc, err := mesh.ApplyMeshConfigDefaults(string(meshText))
	if err != nil {
		return nil, fmt.Errorf("mesh-config.yaml: %v", err)
	}
	pb, err := os.ReadFile(filepath.Join(in, "proxies.json"))
	if err != nil {
		return nil, err
	}
	var specs []proxySpec
	if err := json.Unmarshal(pb, &specs); err != nil {
		return nil, fmt.Errorf("proxies.json: %v", err)
	}
	ambient := needsAmbient(specs)
	if ambient && !features.EnableAmbient {
		return nil, fmt.Errorf("ambient proxies need %s=true at start-up", ambientEnv)
	}
	istioCfg, kubeObjs, hasGatewayAPI, ingressGateways, err := readInputs(in, ambient)
	if err != nil {
		return nil, err
	}
	s := xds.NewFakeDiscoveryServer(t, xds.FakeOptions{
		ConfigString:           istioCfg,
		KubernetesObjectString: kubeObjs,
		MeshConfig:             mc,
	})
	if hasGatewayAPI {
		if err := settleGatewayAPI(t, s, ingressGateways); err != nil {
			return nil, err
		}
	}
	proxies := map[string]any{}
	for _, sp := range specs {
		p := &model.Proxy{
			Type:            model.SidecarProxy,
			IPAddresses:     []string{sp.IP},
			ID:              sp.Name + "." + sp.Namespace,
			ConfigNamespace: sp.Namespace,
			DNSDomain:       sp.Namespace + ".svc.cluster.local",
			Labels:          sp.Labels,
			Metadata: &model.NodeMetadata{
				Namespace:    sp.Namespace,
				Labels:       sp.Labels,
				ClusterID:    constants.DefaultClusterName,
				IstioVersion: proxyIstioVersion,
			},
		}
		switch sp.Type {
		case "router":
			p.Type = model.Router
		case "sidecar":
		case "waypoint":
			p.Type = model.Waypoint
		case "ztunnel":
			z, err := ztunnelConfig(t, s, sp)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", sp.Name, err)
			}
			proxies[sp.Name] = z
			continue
		default:
			return nil, fmt.Errorf("proxies.json: %s: unknown type %q (router, sidecar, waypoint or ztunnel)", sp.Name, sp.Type)
		}
		p = s.SetupProxy(p)
		listeners := s.Listeners(p)
		routes := s.RoutesFromListeners(p, listeners)
		clusters := s.Clusters(p)
		endpoints := s.Endpoints(p)
		l, err := marshalAll(listeners)
		if err != nil {
			return nil, err
		}
		r, err := marshalAll(routes)
		if err != nil {
			return nil, err
		}
		c, err := marshalAll(clusters)
		if err != nil {
			return nil, err
		}
		e, err := marshalAll(endpoints)
		if err != nil {
			return nil, err
		}
		proxies[sp.Name] = map[string]any{"listeners": l, "routes": r, "clusters": c, "endpoints": e}
	}
	return map[string]any{"istio_version": istioVersion, "ambient": ambient, "proxies": proxies}, nil
}

// ztunnelConfig is what istiod pushes to a ztunnel: every workload and service
// address (istio.workload.Address) and every authorization policy ztunnel
// enforces (istio.security.Authorization), fetched over delta xDS from the
// discovery server's own generators, as a ztunnel subscribes to them.
func ztunnelConfig(t test.Failer, s *xds.FakeDiscoveryServer, sp proxySpec) (map[string]any, error) {
	out := map[string]any{}
	for _, typ := range []struct{ key, url string }{
		{"addresses", v3.AddressType},
		{"authorizations", v3.WorkloadAuthorizationType},
	} {
		ads := s.ConnectDeltaADS().WithType(typ.url).WithTimeout(20 * time.Second).
			WithNodeType(model.Ztunnel).
			WithMetadata(model.NodeMetadata{NodeName: sp.Name, Namespace: sp.Namespace, ClusterID: constants.DefaultClusterName})
		resp := ads.RequestResponseAck(&discovery.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"*"}})
		var docs []json.RawMessage
		names := []string{}
		byName := map[string]json.RawMessage{}
		for _, r := range resp.Resources {
			var m proto.Message
			if typ.url == v3.AddressType {
				m = &workloadapi.Address{}
			} else {
				m = &security.Authorization{}
			}
			if err := r.Resource.UnmarshalTo(m); err != nil {
				return nil, fmt.Errorf("%s %s: %v", typ.key, r.Name, err)
			}
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
			if err != nil {
				return nil, err
			}
			names = append(names, r.Name)
			byName[r.Name] = b
		}
		sort.Strings(names)
		for _, n := range names {
			docs = append(docs, byName[n])
		}
		out[typ.key] = docs
		ads.Cleanup()
	}
	return out, nil
}

func main() {
	in := flag.String("in", "", "folder of rendered objects, mesh-config.yaml and proxies.json")
	out := flag.String("out", "", "output file (default stdout)")
	version := flag.Bool("version", false, "print the istio.io/istio version this binary is built from")
	flag.Parse()
	if *version {
		fmt.Println(istioVersion)
		return
	}
	if *in == "" {
		fmt.Fprintln(os.Stderr, "usage: istio-xds -in DIR [-out FILE]")
		os.Exit(2)
	}
	if !features.EnableAmbient && os.Getenv(ambientEnv) == "" {
		// istiod's ambient switch is read at start-up: start again with it when
		// the proxies ask for ambient (and exactly as before otherwise).
		if b, err := os.ReadFile(filepath.Join(*in, "proxies.json")); err == nil {
			var specs []proxySpec
			if json.Unmarshal(b, &specs) == nil && needsAmbient(specs) {
				exe, err := os.Executable()
				if err == nil {
					err = syscall.Exec(exe, os.Args, append(os.Environ(), ambientEnv+"=true"))
				}
				fmt.Fprintln(os.Stderr, "istio-xds: re-executing with "+ambientEnv+"=true:", err)
				os.Exit(1)
			}
		}
	}
	lo := istiolog.DefaultOptions()
	lo.OutputPaths = []string{"stderr"}
	lo.ErrorOutputPaths = []string{"stderr"}
	if err := istiolog.Configure(lo); err != nil {
		fmt.Fprintln(os.Stderr, "istio-xds: log setup:", err)
		os.Exit(1)
	}
	var result map[string]any
	var runErr error
	if err := test.Wrap(func(t test.Failer) { result, runErr = run(t, *in) }); err != nil {
		fmt.Fprintln(os.Stderr, "istio-xds:", err)
		os.Exit(1)
	}
	if runErr != nil {
		fmt.Fprintln(os.Stderr, "istio-xds:", runErr)
		os.Exit(1)
	}
	b, err := json.MarshalIndent(result, "", " ")
	if err != nil {
		fmt.Fprintln(os.Stderr, "istio-xds:", err)
		os.Exit(1)
	}
	b = append(b, '\n')
	if *out == "" {
		_, err = os.Stdout.Write(b)
	} else {
		err = os.WriteFile(*out, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "istio-xds:", err)
		os.Exit(1)
	}
}
