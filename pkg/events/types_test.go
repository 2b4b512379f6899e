package events_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stevedore/stevedore/pkg/events"
)

// TestTypesIsTheCatalogue checks that Types lists every Type constant of
// the package once, and exactly the types docs/events.md documents, in its
// order.
func TestTypesIsTheCatalogue(t *testing.T) {
	types := events.Types()
	fset := token.NewFileSet()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var declared []events.Type
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Type" {
				return true
			}
			for _, v := range vs.Values {
				if lit, ok := v.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					s, _ := strconv.Unquote(lit.Value)
					declared = append(declared, events.Type(s))
				}
			}
			return true
		})
	}
	if len(declared) == 0 {
		t.Fatal("found no Type constants")
	}
	for _, d := range declared {
		if !events.KnownType(d) {
			t.Errorf("type %q is declared but not in Types()", d)
		}
	}
	if len(types) != len(declared) {
		t.Errorf("Types() has %d types, the package declares %d", len(types), len(declared))
	}

	doc, err := os.ReadFile("../../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []events.Type
	for _, m := range regexp.MustCompile("(?m)^### `([a-z-]+)` — `sd\\.evt\\.").FindAllSubmatch(doc, -1) {
		documented = append(documented, events.Type(m[1]))
	}
	if !slices.Equal(types, documented) {
		t.Errorf("Types() = %v\ndocs/events.md documents %v", types, documented)
	}
	if events.KnownType("nonsense") || events.KnownType("") {
		t.Error("KnownType accepts a type that is not in the catalogue")
	}
	types[0] = "changed"
	if events.Types()[0] == "changed" {
		t.Error("Types() returns the catalogue itself, not a copy")
	}
}
