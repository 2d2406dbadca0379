// The metric editor: CodeMirror 6 (npm, through the builder page's import map) with the metric
// language's highlighting, completion of its columns and functions (GET /catalog/language) and
// of the org's event and property names (GET /catalog/events, /catalog/properties),
// Ctrl/Cmd+Enter to run, and the compiler's error underlined at its position.
import { autocompletion, closeBrackets, closeBracketsKeymap, completionKeymap, startCompletion } from "@codemirror/autocomplete";
import { defaultKeymap, history, historyKeymap } from "@codemirror/commands";
import { sql, SQLDialect } from "@codemirror/lang-sql";
import { bracketMatching, HighlightStyle, syntaxHighlighting } from "@codemirror/language";
import { EditorState, Prec, StateEffect, StateField } from "@codemirror/state";
import { Decoration, EditorView, keymap, placeholder } from "@codemirror/view";
import { tags } from "@lezer/highlight";

/** A property key the metric language accepts in props['…'] (validate.PROP_KEY_RE). */
export const PROP_KEY = /^[A-Za-z0-9_.:-]{1,64}$/;

/** A string literal of the metric language. */
export const quoteString = (value) => `'${String(value).replaceAll("'", "''")}'`;

const KEYWORDS = "select as where group by and or not in like ilike true false";

// Colours are the page's custom properties (app.css, editor.css): light and dark follow theme.js.
const highlight = HighlightStyle.define([
  { tag: tags.keyword, color: "var(--cm-keyword)", fontWeight: "600" },
  { tag: [tags.standard(tags.name), tags.function(tags.variableName)], color: "var(--cm-function)" },
  { tag: tags.string, color: "var(--cm-string)" },
  { tag: tags.number, color: "var(--cm-number)" },
  { tag: [tags.operator, tags.compareOperator], color: "var(--cm-operator)" },
  { tag: tags.bool, color: "var(--cm-number)" },
  { tag: [tags.lineComment, tags.blockComment], color: "var(--muted)", fontStyle: "italic" },
]);

const theme = EditorView.theme({
  "&": { color: "var(--fg)", backgroundColor: "var(--input-bg)", border: "1px solid var(--line)", borderRadius: "6px", fontSize: "14px" },
  "&.cm-focused": { outline: "3px solid var(--focus)", outlineOffset: "2px" },
  ".cm-scroller": { fontFamily: "var(--mono)", lineHeight: "1.5", minHeight: "140px" },
  ".cm-content": { padding: "8px 0", caretColor: "var(--fg)" },
  ".cm-cursor": { borderLeftColor: "var(--fg)" },
  "&.cm-focused .cm-selectionBackground, .cm-selectionBackground, ::selection": { backgroundColor: "var(--cm-selection)" },
  ".cm-matchingBracket": { backgroundColor: "var(--cm-selection)", outline: "1px solid var(--muted)" },
  ".cm-tooltip": { backgroundColor: "var(--card-bg)", color: "var(--fg)", border: "1px solid var(--line)", borderRadius: "6px", boxShadow: "0 4px 12px var(--shadow)" },
  ".cm-tooltip-autocomplete > ul": { fontFamily: "var(--mono)", maxHeight: "16em" },
  ".cm-tooltip-autocomplete > ul > li": { padding: "2px 8px" },
  ".cm-tooltip-autocomplete > ul > li[aria-selected]": { backgroundColor: "var(--accent)", color: "var(--accent-fg)" },
  ".cm-completionDetail": { color: "inherit", opacity: ".75", marginLeft: "1em", fontStyle: "normal" },
  ".cm-completionMatchedText": { textDecoration: "none", fontWeight: "700" },
  ".cm-placeholder": { color: "var(--muted)" },
});

// -- the compiler's error: one underlined range ---------------------------------------------------

const setError = StateEffect.define();
const errorField = StateField.define({
  create: () => null,
  update(value, tr) {
    for (const effect of tr.effects) if (effect.is(setError)) return effect.value;
    return tr.docChanged ? null : value; // an edit makes the old position meaningless
  },
  provide: (field) => [
    EditorView.decorations.from(field, (mark) => {
      if (!mark) return Decoration.none;
      const attributes = { id: "error-mark", "data-offset": String(mark.from) };
      return Decoration.set([Decoration.mark({ class: "error-mark", attributes }).range(mark.from, mark.to)]);
    }),
    EditorView.contentAttributes.from(field, (mark) => (mark ? { "aria-invalid": "true" } : {})),
  ],
});

// -- completion ---------------------------------------------------------------------------------

/** What completes, from the server: the language's words and the org's names (with counts). */
export class Vocabulary {
  constructor() {
    this.functions = [];
    this.columns = [];
    this.stringColumns = []; // columns whose top values the Data panel lists
    this.events = []; // [name, count]
    this.properties = []; // [key, count]
  }

  /** Load the language's words and the org's names; `get` is api.js's GET. Failures leave gaps. */
  async load(get) {
    const [language, events, properties] = await Promise.allSettled([
      get("/catalog/language"),
      get("/catalog/events"),
      get("/catalog/properties"),
    ]);
    if (language.status === "fulfilled") {
      this.functions = language.value.functions;
      this.columns = language.value.columns;
      this.stringColumns = language.value.string_columns;
    }
    if (events.status === "fulfilled") this.events = events.value.rows;
    if (properties.status === "fulfilled") this.properties = properties.value.rows;
    return this;
  }
}

const fmtCount = (n) => `${Number(n).toLocaleString("en-US")} in 7 d`;

function completionSource(vocab) {
  return (context) => {
    // Inside a string literal: the org's event names (and property values are the Data panel's).
    // An odd number of quotes before the cursor on its line: inside a string ('' is a quote).
    const line = context.state.doc.lineAt(context.pos);
    const before = line.text.slice(0, context.pos - line.from);
    if ((before.split("'").length - 1) % 2 === 1) {
      const from = line.from + before.lastIndexOf("'") + 1;
      return {
        from,
        validFor: /^[^']*$/,
        options: vocab.events.map(([name, count]) => ({
          label: String(name),
          type: "event",
          detail: `event · ${fmtCount(count)}`,
          apply: String(name).replaceAll("'", "''"),
          boost: 2,
        })),
      };
    }
    const word = context.matchBefore(/[A-Za-z_][\w.]*/);
    if (!word && !context.explicit) return null;
    const from = word ? word.from : context.pos;
    const options = [
      ...vocab.columns.map((name) => ({ label: name, type: "variable", detail: "column", boost: 1 })),
      ...vocab.functions.map((name) => ({ label: name, type: "function", detail: "function", apply: `${name}(` })),
      ...KEYWORDS.split(" ").map((kw) => ({ label: kw.toUpperCase(), type: "keyword" })),
      { label: "GROUP BY", type: "keyword" },
      ...vocab.events.map(([name, count]) => ({
        label: String(name),
        type: "event",
        detail: `event · ${fmtCount(count)}`,
        apply: quoteString(name),
        boost: 2,
      })),
      ...vocab.properties
        .filter(([key]) => PROP_KEY.test(String(key)))
        .map(([key, count]) => ({
          label: `props['${key}']`,
          type: "property",
          detail: `property · ${fmtCount(count)}`,
          boost: 1,
        })),
    ];
    return { from, options, validFor: /^[\w.]*$/ };
  };
}

// -- the editor -----------------------------------------------------------------------------------

/**
 * A metric editor in `parent`. `labelledBy`: id of its visible label; `onRun`: Ctrl/Cmd+Enter;
 * `onChange(text)`: every edit. Answers { view, text(), setText(), insert(), showError(),
 * clearError(), focus() }.
 */
export function createMetricEditor({ parent, doc = "", labelledBy, describedBy, vocabulary, onRun, onChange }) {
  const dialect = SQLDialect.define({
    keywords: KEYWORDS,
    builtin: vocabulary.functions.join(" ").toLowerCase(),
    types: "",
    caseInsensitiveIdentifiers: true,
  });
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc,
      extensions: [
        Prec.highest(keymap.of([{ key: "Mod-Enter", run: () => (onRun?.(), true) }])),
        history(),
        closeBrackets(),
        bracketMatching(),
        sql({ dialect }),
        syntaxHighlighting(highlight),
        autocompletion({ override: [completionSource(vocabulary)], activateOnTyping: true, icons: false }),
        keymap.of([...closeBracketsKeymap, ...completionKeymap, ...historyKeymap, ...defaultKeymap]),
        EditorView.lineWrapping,
        placeholder("SELECT count() AS events WHERE event = 'pageview'"),
        errorField,
        theme,
        EditorView.contentAttributes.of({
          "aria-labelledby": labelledBy,
          ...(describedBy ? { "aria-describedby": describedBy } : {}),
          "aria-multiline": "true",
          spellcheck: "false",
          "data-testid": "metric-editor",
        }),
        EditorView.updateListener.of((update) => {
          if (update.docChanged) onChange?.(update.state.doc.toString());
        }),
      ],
    }),
  });
  return {
    view,
    // Trailing whitespace means nothing in a metric; Chrome can leave an empty last line when a
    // whole document is replaced by typing over a select-all.
    text: () => view.state.doc.toString().trimEnd(),
    setText(text) {
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
    },
    /** Insert `text` at the cursor (replacing the selection) and focus the editor. */
    insert(text) {
      const { from, to } = view.state.selection.main;
      view.dispatch({ changes: { from, to, insert: text }, selection: { anchor: from + text.length }, scrollIntoView: true });
      view.focus();
    },
    showError(from, to) {
      const end = Math.min(view.state.doc.length, Math.max(from + 1, to));
      const start = Math.min(from, Math.max(0, end - 1));
      view.dispatch({ effects: setError.of(end > start ? { from: start, to: end } : null) });
    },
    clearError() {
      if (view.state.field(errorField)) view.dispatch({ effects: setError.of(null) });
    },
    select(from, to) {
      view.dispatch({ selection: { anchor: from, head: to }, scrollIntoView: true });
      view.focus();
    },
    focus: () => view.focus(),
    complete: () => startCompletion(view),
  };
}
