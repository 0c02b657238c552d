// An API explorer for the server's own OpenAPI description (GET /openapi.json): every
// operation by tag, its parameters and a request body to start from, sent from the page
// with the back office's credential. Written here, so it works offline.
"use strict";

const stockroomExplorer = (() => {
  const { api, el } = stockroom;

  /** Follows a local `$ref`. */
  function resolve(spec, schema) {
    let seen = 0;
    while (schema && schema.$ref && seen++ < 20) {
      const path = schema.$ref.replace(/^#\//, "").split("/");
      schema = path.reduce((node, key) => (node ? node[key] : undefined), spec);
    }
    return schema || {};
  }

  /** A body to start from: each required field with an empty value of its type. */
  function skeleton(spec, schema, depth = 0) {
    schema = resolve(spec, schema);
    if (depth > 4) return null;
    const choice = schema.oneOf || schema.anyOf;
    if (choice) return skeleton(spec, choice.find((each) => resolve(spec, each).type !== "null") || choice[0], depth + 1);
    if (schema.example !== undefined) return schema.example;
    const type = Array.isArray(schema.type) ? schema.type.find((each) => each !== "null") : schema.type;
    switch (type) {
      case "object": {
        const out = {};
        const required = new Set(schema.required || []);
        for (const [name, property] of Object.entries(schema.properties || {})) {
          if (required.has(name)) out[name] = skeleton(spec, property, depth + 1);
        }
        return out;
      }
      case "array":
        return [];
      case "integer":
      case "number":
        return 0;
      case "boolean":
        return false;
      case "string":
        return schema.enum ? schema.enum[0] : "";
      default:
        return {};
    }
  }

  /** The operation's summary, without the method and path it repeats. */
  function summaryOf(operation) {
    return (operation.summary || "").replace(/^`[A-Z]+ [^`]*`\s*:?\s*/, "");
  }

  function operationView(spec, path, method, operation, credential, index) {
    const parameters = (operation.parameters || []).map((parameter) => resolve(spec, parameter)).filter((parameter) => parameter.in === "path" || parameter.in === "query");
    const inputs = parameters.map((parameter, n) => {
      const id = `op-${index}-p-${n}`;
      const input = el("input", { id, dataset: { name: parameter.name, in: parameter.in }, required: parameter.required ? true : undefined, autocomplete: "off" });
      return { parameter, input, label: el("label", { for: id }, `${parameter.name} (${parameter.in}${parameter.required ? ", required" : ""})`, input) };
    });
    let body = null;
    const content = operation.requestBody && resolve(spec, operation.requestBody).content;
    if (content && content["application/json"]) {
      body = el("textarea", { id: `op-${index}-body`, spellcheck: "false" });
      body.value = JSON.stringify(skeleton(spec, content["application/json"].schema), null, 2);
    }
    const send = el("button", { type: "submit", text: "Send" });
    const withCredential = el("input", { id: `op-${index}-auth`, type: "checkbox", checked: true });
    const output = el("pre", { "aria-live": "polite" });
    const form = el(
      "form",
      {},
      operation.description ? el("p", { text: operation.description }) : null,
      el("div", { class: "actions" }, ...inputs.map((each) => each.label)),
      body ? el("label", { for: body.id }, "Body (JSON)", body) : null,
      el("div", { class: "actions" }, el("label", { for: withCredential.id }, "Send the credential", withCredential), send),
      output
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      let url = path;
      const query = new URLSearchParams();
      for (const { parameter, input } of inputs) {
        if (parameter.in === "path") url = url.replace(`{${parameter.name}}`, encodeURIComponent(input.value));
        else if (input.value !== "") query.set(parameter.name, input.value);
      }
      if ([...query].length) url += "?" + query;
      let parsed;
      if (body) {
        try {
          parsed = body.value.trim() === "" ? undefined : JSON.parse(body.value);
        } catch (error) {
          output.textContent = "The body is not JSON: " + error.message;
          return;
        }
      }
      send.disabled = true;
      output.textContent = `${method.toUpperCase()} ${url} …`;
      try {
        const answer = await api(method.toUpperCase(), url, { body: parsed, token: withCredential.checked ? credential() : undefined });
        output.textContent = `${answer.status}\n` + (typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body, null, 2));
      } catch (error) {
        output.textContent = "The server cannot be reached.";
      }
      send.disabled = false;
    });
    return el(
      "details",
      { class: "operation" },
      el("summary", {}, el("span", { class: "method", text: method.toUpperCase() }), " ", el("code", { text: path }), " ", summaryOf(operation)),
      form
    );
  }

  /** Loads the description and shows every operation in `container`. */
  async function open(container, credential) {
    container.replaceChildren(el("p", { role: "status", text: "Loading /openapi.json…" }));
    let answer;
    try {
      answer = await api("GET", "/openapi.json");
    } catch (_) {
      answer = null;
    }
    if (!answer || answer.status !== 200) {
      container.replaceChildren(el("p", { class: "message bad", text: "The description could not be loaded." }));
      return;
    }
    const spec = answer.body;
    const byTag = new Map();
    let index = 0;
    for (const [path, operations] of Object.entries(spec.paths || {})) {
      for (const [method, operation] of Object.entries(operations)) {
        if (!["get", "put", "post", "delete", "patch"].includes(method)) continue;
        const tag = (operation.tags && operation.tags[0]) || "other";
        if (!byTag.has(tag)) byTag.set(tag, []);
        byTag.get(tag).push(operationView(spec, path, method, operation, credential, index++));
      }
    }
    const title = spec.info ? `${spec.info.title} ${spec.info.version}` : "API";
    container.replaceChildren(
      el("p", { text: `${title}: ${index} operations. Requests go to this server with this tab's credential.` }),
      ...[...byTag.entries()].map(([tag, views]) => el("section", { dataset: { tag } }, el("h3", { text: tag }), ...views))
    );
  }

  return { open };
})();
