package gateway

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/pkg/events"
)

// logGen generates a realistic event log, as a cluster records it: pulls
// (resolve, fetch, commit, unpack each layer), container runs (create,
// start, exit, and mostly delete), image and content removals. The same
// seed yields the same events.
type logGen struct {
	r     *rand.Rand
	n     int // events generated
	t     time.Time
	queue []*events.Envelope
}

func newLogGen(seed uint64) *logGen {
	return &logGen{r: rand.New(rand.NewPCG(seed, seed^0x5eed)), t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// next returns the next event, with its Seq unset.
func (g *logGen) next() *events.Envelope {
	for len(g.queue) == 0 {
		g.scenario()
	}
	ev := g.queue[0]
	g.queue = g.queue[1:]
	g.n++
	return ev
}

func (g *logGen) add(m events.Meta, t events.Type, agg events.Aggregate, payload any) {
	b, err := json.Marshal(payload)
	if err != nil {
		panic(err)
	}
	g.t = g.t.Add(time.Duration(1+g.r.IntN(5000)) * time.Microsecond)
	g.queue = append(g.queue, &events.Envelope{
		ID: fmt.Sprintf("ev%012d", g.n+len(g.queue)), Type: t, Version: events.SchemaVersion, Time: g.t,
		Namespace: m.Namespace, Aggregate: agg, Operation: m.Operation, Causation: m.Causation,
		Actor: m.Actor, Node: m.Node, Payload: b,
	})
}

func (g *logGen) digest(kind string, i int) digest.Digest {
	return digest.FromString(fmt.Sprintf("%s-%d", kind, i))
}

// scenario queues one operation's events.
func (g *logGen) scenario() {
	ns := []string{"default", "default", "default", "team-a"}[g.r.IntN(4)]
	node := fmt.Sprintf("node-%d", g.r.IntN(4))
	op := fmt.Sprintf("op%d", g.n+len(g.queue))
	m := events.Meta{Namespace: ns, Operation: op, Actor: "alice@build-7", Node: node}
	img := g.r.IntN(2000)
	name := fmt.Sprintf("registry.example:5000/team/app-%d:v%d", img%400, img/400)
	switch k := g.r.IntN(20); {
	case k < 8: // a pull of an image with 1–6 layers
		layers := 1 + g.r.IntN(6)
		ref := name
		manifest := g.digest("manifest", img)
		cfg := g.digest("config", img)
		g.add(m, events.TypePullRequested, events.PullAggregate(op), events.PullRequested{Ref: ref, Platform: "linux/amd64", Unpack: true})
		desc := func(mt string, d digest.Digest, size int64) ocispec.Descriptor {
			return ocispec.Descriptor{MediaType: mt, Digest: d, Size: size}
		}
		res := func(role string, d ocispec.Descriptor, parent digest.Digest) {
			g.add(m, events.TypeDescriptorResolved, events.BlobAggregate(d.Digest), events.DescriptorResolved{
				Ref: ref, Platform: "linux/amd64", Role: role, Descriptor: d, Parent: parent, Root: manifest,
				RootMediaType: ocispec.MediaTypeImageManifest, Unpack: true,
			})
		}
		com := func(role string, d ocispec.Descriptor, parent digest.Digest) {
			g.add(m, events.TypeBlobCommitted, events.BlobAggregate(d.Digest), events.BlobCommitted{
				Ref: ref, Role: role, Descriptor: d, Fetched: d.Size, Duration: time.Duration(g.r.IntN(1e9)), Parent: parent, Unpack: true,
			})
		}
		md := desc(ocispec.MediaTypeImageManifest, manifest, 1200)
		res(events.RoleManifest, md, "")
		com(events.RoleManifest, md, "")
		cd := desc(ocispec.MediaTypeImageConfig, cfg, 3000)
		res(events.RoleConfig, cd, manifest)
		var lds []ocispec.Descriptor
		var diffIDs []digest.Digest
		for i := range layers {
			l := desc(ocispec.MediaTypeImageLayerGzip, g.digest("layer", img*10+i), int64(1+g.r.IntN(50<<20)))
			lds = append(lds, l)
			diffIDs = append(diffIDs, g.digest("diff", img*10+i))
			res(events.RoleLayer, l, manifest)
		}
		com(events.RoleConfig, cd, manifest)
		for _, l := range lds {
			com(events.RoleLayer, l, manifest)
		}
		var total int64
		for _, l := range lds {
			total += l.Size
		}
		created := g.t.Add(-time.Hour)
		g.add(m, events.TypeImageUpdated, events.ImageAggregate(ref), events.ImageUpdated{Name: ref, Target: md, Size: total, Created: &created, Platform: "linux/amd64"})
		g.add(m, events.TypeUnpackRequested, events.ImageAggregate(ref), events.UnpackRequested{
			Ref: ref, Target: md, Manifest: manifest, Config: cfg, Layers: lds, DiffIDs: diffIDs, Size: total, Blobs: 2 + layers,
		})
		var parent digest.Digest
		for i, l := range lds {
			chain := g.digest("chain", img*10+i)
			g.add(m, events.TypeLayerApplied, events.SnapshotAggregate(chain.String()), events.LayerApplied{
				Ref: ref, ChainID: chain, Parent: parent, DiffID: diffIDs[i], Layer: l.Digest, Index: i, Size: l.Size * 2,
				Duration: time.Duration(g.r.IntN(1e9)), Snapshotter: "overlay",
			})
			parent = chain
		}
		g.add(m, events.TypeImageUnpacked, events.ImageAggregate(ref), events.ImageUnpacked{
			Name: ref, Target: manifest, ChainID: parent, Layers: layers, Snapshotter: "overlay",
		})
		g.add(m, events.TypePullCompleted, events.PullAggregate(op), events.PullCompleted{Ref: ref, Target: manifest, Size: total, Blobs: 2 + layers})
	case k < 17: // a container run
		id := fmt.Sprintf("c%d", g.n+len(g.queue))
		agg := events.ContainerAggregate(id)
		rm := g.r.IntN(2) == 0
		g.add(m, events.TypeContainerCreateRequested, agg, events.ContainerCreateRequested{
			ID: id, Image: name, Node: node, Start: true, Rm: rm, Options: events.ContainerOptions{Args: []string{"sh", "-c", "echo hello"}},
		})
		g.add(m, events.TypeContainerCreated, agg, events.ContainerCreated{
			ID: id, Image: name, ImageDigest: g.digest("manifest", img), ChainID: g.digest("chain", img*10),
			SnapshotKey: "default/" + id, Snapshotter: "overlay", Node: node, Rm: rm,
			Spec: json.RawMessage(`{"ociVersion":"1.2.0","process":{"args":["sh","-c","echo hello"],"cwd":"/","env":["PATH=/usr/bin:/bin"]},"root":{"path":"rootfs"},"hostname":"` + id + `"}`),
		})
		started := g.t
		g.add(m, events.TypeTaskStarted, agg, events.TaskStarted{ID: id, Pid: 1000 + g.r.IntN(60000), StartedAt: started})
		if g.r.IntN(8) == 0 {
			return // still running
		}
		g.add(m, events.TypeTaskExited, agg, events.TaskExited{ID: id, Code: []int{0, 0, 0, 1, 137}[g.r.IntN(5)], StartedAt: started, ExitedAt: g.t})
		if rm || g.r.IntN(2) == 0 {
			g.add(m, events.TypeContainerDeleteRequested, agg, events.ContainerDeleteRequested{ID: id, Node: node})
			g.add(m, events.TypeContainerDeleted, agg, events.ContainerDeleted{ID: id})
		}
	case k < 19: // an image removed
		g.add(m, events.TypeImageDeleted, events.ImageAggregate(name), events.ImageDeleted{Name: name})
	default: // a blob removed
		d := g.digest("layer", img*10)
		g.add(m, events.TypeContentDeleteRequested, events.BlobAggregate(d), events.ContentDeleteRequested{Digest: d})
		g.add(m, events.TypeBlobDeleted, events.BlobAggregate(d), events.BlobDeleted{Digest: d})
	}
}
