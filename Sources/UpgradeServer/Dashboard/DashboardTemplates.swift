/// The fleet page's mustache templates, its script and its style sheet (docs/DESIGN.md, "The fleet page").
///
/// String constants rather than package resources: they are compiled into the one `upgradefs` binary, so
/// `make install` (which copies the binary alone) and a binary copied to a node need nothing beside it, and no
/// lookup of a resource bundle can fail at run time. Each `data-live` section is a template of its own: the page
/// renders them all, and the event stream sends one again when its rendering changes.
enum DashboardTemplates {
    /// Template name → text. `fleet`, `node`, `signin` and `result` are pages; the rest are partials.
    static let all: [String: String] = [
        "head": head, "header": header, "upgrades": upgrades, "locks": locks, "nodes": nodes, "node-detail": nodeDetail,
        "fleet": fleet, "node": node, "signin": signin, "result": result,
    ]

    /// The live sections of each page, in order (what the event stream re-renders).
    static let fleetSections = ["upgrades", "locks", "nodes"]
    static let nodeSections = ["node-detail"]

    static let head = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{title}}</title><link rel="stylesheet" href="/assets/dashboard.css"></head>
        """

    static let header = """
        <header><h1><a href="/">upgradefs</a> · {{title}}</h1><nav>\
        {{#session.signedIn}}<span class="who">signed in as operator</span> \
        <form method="post" action="/logout" class="inline"><button>Sign out</button></form>{{/session.signedIn}}\
        {{^session.signedIn}}<a href="/login">Operator sign-in</a>{{/session.signedIn}}</nav></header>
        {{^session.actionsEnabled}}<p class="notice">Operator actions are off: the server was started without \
        <code>--operator-token-file</code>.</p>{{/session.actionsEnabled}}
        """

    static let fleet = """
        {{> head}}
        <body data-events="/events" data-revision="{{page.revision}}">
        {{> header}}
        <main>
        {{> upgrades}}
        {{> locks}}
        {{> nodes}}
        </main>
        <script src="/assets/live.js"></script>
        </body></html>
        """

    static let node = """
        {{> head}}
        <body data-events="/events?node={{page.node.name}}" data-revision="{{page.revision}}">
        {{> header}}
        <main>
        {{> node-detail}}
        </main>
        <script src="/assets/live.js"></script>
        </body></html>
        """

    /// Hidden fields every action form carries: the session's CSRF token and the page to return to.
    private static let actionFields = """
        <input type="hidden" name="csrf" value="{{session.csrf}}"><input type="hidden" name="back" value="{{session.back}}">
        """

    static let upgrades = """
        <section id="upgrades" data-live><h2>Upgrades</h2>{{#page}}\
        {{^upgrades}}<p class="empty">No upgrade published yet.</p>{{/upgrades}}
        {{#upgrades}}<article class="upgrade" id="upgrade-{{version}}">
        <h3>Upgrade {{version}} <span class="class">{{class}}</span> \
        <span class="control control-{{control}}" title="upgrades/{{version}}/control">{{control}}</span></h3>
        {{#description}}<p class="description">{{.}}</p>{{/description}}
        <p class="meta">SF <code>{{sf}}</code> · published {{published}}</p>
        <p><progress value="{{done}}" max="{{total}}">{{percentDone}}%</progress> \
        <span class="done">{{done}}/{{total}} done ({{percentDone}}%)</span> · \
        <span class="waiting">{{waiting}} waiting</span> · <span class="upgrading">{{upgrading}} upgrading</span> · \
        <span class="failed">{{failed}} failed</span></p>
        <p class="states">{{#counts}}<span class="state">{{state}} {{count}}</span> {{/counts}}</p>
        {{#session.actionsEnabled}}<form method="post" action="/actions" class="actions">\(actionFields)\
        <input type="hidden" name="upgrade" value="{{version}}">\
        <button name="action" value="pause">Pause</button> <button name="action" value="resume">Resume</button> \
        <button name="action" value="approve">Approve</button> <button name="action" value="abort" class="danger">Abort</button></form>\
        {{/session.actionsEnabled}}
        </article>
        {{/upgrades}}{{/page}}</section>
        """

    static let locks = """
        <section id="locks" data-live><h2>Locks</h2>{{#page}}\
        {{^locks}}<p class="empty">No lock in use.</p>{{/locks}}
        {{#locks}}<article class="lock" id="lock-{{name}}">
        <h3>{{name}} <span class="held">{{held}}/{{capacity}} held</span>{{#full}} <span class="badge">full</span>{{/full}}</h3>
        <ul>{{#holders}}<li><code>{{holder}}</code> ({{node}}, held {{held}}) {{#session.actionsEnabled}}\
        <form method="post" action="/actions" class="inline">\(actionFields)<input type="hidden" name="lock" value="{{lock}}">\
        <input type="hidden" name="holder" value="{{holder}}"><button name="action" value="release">Release</button></form>\
        {{/session.actionsEnabled}}</li>
        {{/holders}}</ul>
        {{#session.actionsEnabled}}<form method="post" action="/actions" class="inline">\(actionFields)\
        <input type="hidden" name="lock" value="{{name}}">\
        <label>capacity <input type="number" name="capacity" min="0" value="{{capacity}}"></label> \
        <button name="action" value="capacity">Set</button></form>{{/session.actionsEnabled}}
        </article>
        {{/locks}}{{/page}}</section>
        """

    static let nodes = """
        <section id="nodes" data-live><h2>Nodes</h2>{{#page}}
        <p class="meta"><span id="node-count">{{nodeCount}}</span> enrolled · <span id="stale-count">{{staleCount}}</span> stale \
        (no heartbeat within the lock TTL) · revision <span id="revision">{{revision}}</span></p>
        <table class="groups"><thead><tr><th>state</th><th>version</th><th>nodes</th></tr></thead><tbody>
        {{#groups}}<tr><td>{{state}}</td><td>{{version}}</td><td>{{count}}</td></tr>
        {{/groups}}</tbody></table>
        <table class="nodes"><thead><tr><th>node</th><th>class</th><th>state</th><th>version</th><th>heartbeat</th></tr></thead><tbody>
        {{#nodes}}<tr id="node-{{name}}"{{#stale}} class="stale"{{/stale}}><td><a href="/nodes/{{name}}">{{name}}</a></td>\
        <td>{{class}}</td><td class="state">{{state}}</td><td class="version">{{version}}</td><td>{{heartbeat}}\
        {{#stale}} <span class="badge">stale</span>{{/stale}}{{#refusing}} <span class="badge refused" title="{{.}}">refused</span>{{/refusing}}</td></tr>
        {{/nodes}}</tbody></table>{{/page}}</section>
        """

    static let nodeDetail = """
        <section id="node-detail" data-live>{{#page}}{{#node}}
        <h2>Node {{name}}{{#stale}} <span class="badge">stale</span>{{/stale}}</h2>
        <dl class="facts"><dt>class</dt><dd>{{class}}</dd><dt>state</dt><dd class="state">{{state}}</dd>\
        <dt>version</dt><dd class="version">{{version}}</dd><dt>heartbeat</dt><dd>{{heartbeat}}</dd>\
        {{#refusing}}<dt>refused</dt><dd>{{.}}</dd>{{/refusing}}</dl>{{/node}}
        <p class="meta">{{#versionSince}}Its version file last changed {{.}}. {{/versionSince}}The whiteboard keeps each \
        file's latest content only, so the version history is what its log tells.</p>
        <h3>Files</h3><table class="files"><thead><tr><th>file</th><th>bytes</th><th>changed</th><th>content</th></tr></thead><tbody>
        {{#files}}<tr><td>{{name}}</td><td>{{bytes}}</td><td>{{modified}}</td><td>{{#preview}}<code>{{.}}</code>{{/preview}}</td></tr>
        {{/files}}</tbody></table>
        <h3>Lock holders</h3><ul>{{^holders}}<li>none</li>{{/holders}}{{#holders}}<li><code>{{lock}}/{{holder}}</code>, held {{held}}</li>{{/holders}}</ul>
        <h3>Log (last {{logLinesShown}} lines)</h3><pre id="log">{{logTail}}</pre>{{/page}}</section>
        """

    static let signin = """
        {{> head}}
        <body>
        {{> header}}
        <main><h2>Operator sign-in</h2>{{#message}}<p class="error" id="verdict">{{.}}</p>{{/message}}
        <form method="post" action="/login"><label>Operator token \
        <input type="password" name="token" autocomplete="current-password" required></label> <button>Sign in</button></form>
        <p class="meta">The token is what the file given to <code>upgradefs serve --operator-token-file</code> holds.</p></main>
        </body></html>
        """

    static let result = """
        {{> head}}
        <body>
        {{> header}}
        <main><h2>{{heading}}</h2><p class="{{kind}}" id="verdict">{{message}}</p><p><a href="{{back}}">Back</a></p></main>
        </body></html>
        """

    /// Swaps in each live section the event stream sends again (an event named after the section's id), unless the
    /// operator is typing in it; records the revision on the body. No polling: the server sends after each change.
    static let script = """
        // upgradefs fleet page: live sections from the server's event stream (GET /events).
        (function () {
          var body = document.body;
          if (!window.EventSource || !body.dataset.events) return;
          var source = new EventSource(body.dataset.events);
          document.querySelectorAll('[data-live]').forEach(function (section) {
            source.addEventListener(section.id, function (event) {
              var current = document.getElementById(section.id);
              if (current && !current.contains(document.activeElement)) current.outerHTML = event.data;
            });
          });
          source.addEventListener('revision', function (event) { body.dataset.revision = event.data; });
        })();

        """

    static let styleSheet = """
        body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2125; background: #f6f7f9; }
        header { display: flex; justify-content: space-between; align-items: center; padding: 8px 16px; background: #23303d; color: #fff; }
        header a { color: #fff; } header h1 { font-size: 18px; margin: 0; }
        main { padding: 8px 16px; } section { background: #fff; border: 1px solid #d8dde3; border-radius: 6px; margin: 12px 0; padding: 8px 12px; }
        h2 { font-size: 16px; margin: 4px 0 8px; } h3 { font-size: 14px; margin: 8px 0 4px; }
        table { border-collapse: collapse; margin: 6px 0; } th, td { text-align: left; padding: 2px 10px 2px 0; border-bottom: 1px solid #eef0f2; }
        tr.stale td { color: #8a6d00; background: #fff8dc; }
        .badge { font-size: 11px; padding: 0 5px; border-radius: 8px; background: #f0c36d; color: #3a2c00; }
        .badge.refused, .failed { color: #b3261e; } .done { color: #1b7f3a; } .meta { color: #5b6670; }
        .control { font-size: 12px; padding: 1px 6px; border-radius: 8px; background: #dfe7ef; }
        .control-pause, .control-abort { background: #f6d5d2; } .control-approve { background: #d4f0dc; }
        progress { width: 240px; height: 14px; vertical-align: middle; }
        form.inline { display: inline; } button.danger { color: #b3261e; }
        .notice { background: #fff8dc; padding: 6px 12px; border: 1px solid #f0c36d; border-radius: 6px; }
        .error { color: #b3261e; font-weight: 600; } .ok { color: #1b7f3a; font-weight: 600; }
        pre#log { max-height: 480px; overflow: auto; background: #1d2125; color: #e8eaed; padding: 8px; }

        """
}
