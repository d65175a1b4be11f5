// The relay's API, for admins: drawn from GET /api/admin/openapi.json (admins only; the
// relay serves no public /docs, and this needs nothing from the internet).

import { h } from "../dom.js";

const METHODS = ["get", "post", "put", "patch", "delete"];

export function renderApiDocs(root, model, { report }) {
  let loaded = false;
  root.replaceChildren(h("div", { class: "card" },
    h("header", {}, h("h2", {}, "API"), h("span", { class: "muted" }, "what this view uses: every action here is one call, with your sign-in's bearer token")),
    h("div", { id: "apidocs", class: "apidocs" }, h("div", { class: "empty" }, "loading…"))));

  const schemaName = (s) => (s && s.$ref ? s.$ref.split("/").pop() : s && s.type) || "";

  async function load() {
    if (loaded) return;
    try {
      const doc = await model.api("GET", "/api/admin/openapi.json");
      loaded = true;
      const groups = new Map();
      for (const [path, ops] of Object.entries(doc.paths || {})) {
        for (const m of METHODS) {
          const op = ops[m];
          if (!op) continue;
          const tag = (op.tags || ["other"])[0];
          if (!groups.has(tag)) groups.set(tag, []);
          groups.get(tag).push({ m, path, op });
        }
      }
      const fields = (name) => {
        const s = (doc.components?.schemas || {})[name];
        if (!s || !s.properties) return "";
        return ` {${Object.keys(s.properties).join(", ")}}`;
      };
      document.getElementById("apidocs").replaceChildren(...[...groups.entries()].map(([tag, ops]) => h("section", {},
        h("h3", {}, tag),
        h("table", { class: "list" }, h("tbody", {}, ops.map(({ m, path, op }) => {
          const body = op.requestBody?.content?.["application/json"]?.schema;
          const params = (op.parameters || []).filter((p) => p.in === "query").map((p) => p.name);
          return h("tr", { "data-path": path, "data-method": m },
            h("td", { class: "mono nowrap" }, h("b", {}, m.toUpperCase()), ` ${path}`),
            h("td", {}, (op.description || op.summary || "").split("\n")[0],
              params.length ? h("div", { class: "muted mono" }, `?${params.join("&")}`) : null,
              body ? h("div", { class: "muted mono" }, `body ${schemaName(body)}${fields(schemaName(body))}`) : null));
        }))))));
    } catch (e) {
      report(`The API description is not available: ${e.message}`);
    }
  }
  return { load };
}
