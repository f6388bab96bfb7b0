// The catalog map page: one canvas, every item a point (or its photo when zoomed in).
// Built for 50,000 points: drawing batches one path per colour, hover hit-testing
// uses a screen-space grid rebuilt after each redraw, and no point is a DOM node.
(() => {
  "use strict";

  const PHOTO_LIMIT = 300;      // draw photos instead of dots when at most this many items are in view
  const PHOTO_SIZE = 40;        // px
  const CELL = 16;              // px, hit-testing grid cell
  const NO_TOPIC_COLOUR = "#9aa3ab";
  const KEY_STORAGE = "vistas-api-key";  // per tab (sessionStorage), only when the API has keys

  const $ = (selector) => document.querySelector(selector);
  const canvas = $("#map");
  const ctx = canvas.getContext("2d");
  const tooltip = $("#tooltip");

  const state = {
    map: null,              // the /v1/map answer
    xs: null, ys: null,     // data coordinates (Float32Array)
    sx: null, sy: null,     // screen coordinates of the last draw
    index: new Map(),       // item id -> point index
    servedTopics: [],       // /v1/topics
    groupedTopics: [],      // each point's served topic, near-duplicates folded into their group's first
    groupedFor: null,       // the map.topics array groupedTopics was computed from
    colourBy: "served",
    view: { scale: 1, tx: 0, ty: 0 },
    hover: -1,
    selected: null,         // item id
    similar: new Set(),     // point indexes of the selected item's similar items
    topic: -1,              // the legend's picked topic
    grid: null,
    images: new Map(),      // item id -> Image
    photos: new Map(),      // item id -> Promise of a URL the browser can show
    details: new Map(),     // item id -> Promise of /v1/items/{id}
    drawQueued: false,
  };

  // -- data -------------------------------------------------------------------------

  function apiKey() {
    return sessionStorage.getItem(KEY_STORAGE);
  }

  function authHeaders() {
    const key = apiKey();
    return key ? { "X-API-Key": key } : {};
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: authHeaders() });
    const body = await response.json();
    if (!response.ok) {
      const error = new Error(body.error ? body.error.message : response.statusText);
      error.code = body.error && body.error.code;
      throw error;
    }
    return body;
  }

  /** The item's thumbnail as an <img> src: its URL, or with an API key a blob URL (<img> cannot send headers). */
  function photoURL(id) {
    if (!state.photos.has(id)) {
      const url = state.map.thumbnail_url.replace("{id}", encodeURIComponent(id));
      state.photos.set(id, apiKey() === null ? Promise.resolve(url)
        : fetch(url, { headers: authHeaders() })
          .then((response) => (response.ok ? response.blob() : Promise.reject(new Error(response.statusText))))
          .then((blob) => URL.createObjectURL(blob)));
    }
    return state.photos.get(id);
  }

  function showPhoto(img, id) {
    photoURL(id).then((url) => { img.src = url; }, () => {});
  }

  function details(id) {
    if (!state.details.has(id)) {
      state.details.set(id, getJSON(`/v1/items/${encodeURIComponent(id)}`).catch((error) => {
        state.details.delete(id);
        throw error;
      }));
    }
    return state.details.get(id);
  }

  async function load(representation) {
    document.body.dataset.state = "loading";
    const query = representation ? `?representation=${encodeURIComponent(representation)}` : "";
    try {
      const [map, topics] = await Promise.all([
        getJSON(`/v1/map${query}`),
        state.servedTopics.length ? null : getJSON("/v1/topics"),
      ]);
      if (topics) state.servedTopics = topics.topics;
      show(map);
    } catch (error) {
      if (error.code === "unauthorized" || error.code === "forbidden") return askForKey(error.message);
      // a #hash naming no map (mistyped, or not in this catalog): show the default one
      if (representation && ["bad_parameter", "map_not_found"].includes(error.code)) return load(null);
      fail(error);
    }
  }

  function show(map) {
    const n = map.count;
    state.map = map;
    state.xs = Float32Array.from(map.x);
    state.ys = Float32Array.from(map.y);
    state.sx = new Float32Array(n);
    state.sy = new Float32Array(n);
    state.index = new Map(map.ids.map((id, i) => [id, i]));
    state.hover = -1;
    state.topic = -1;
    if (state.colourBy === "own" && !map.own_topics) state.colourBy = "served";
    if (state.selected !== null) markSimilar(state.lastSimilar || []);
    hideTooltip();
    $("#error").hidden = true;
    $("#colour-by").value = state.colourBy;
    $("#colour-by").options[1].disabled = !map.own_topics;
    $("#summary").textContent = map.summary.text;
    $("#status").textContent = `${n.toLocaleString()} items · index version ${map.version}`;
    if (location.hash.slice(1) !== map.representation) history.replaceState(null, "", `#${map.representation}`);
    renderSwitch();
    renderLegend();
    fit();
    draw();
    window.vistasMap.representation = map.representation;
    window.vistasMap.count = n;
    document.body.dataset.representation = map.representation;
    document.body.dataset.state = "ready";
  }

  function askForKey(message) {
    document.body.dataset.state = "key";
    $("#key-error").textContent = message;
    $("#key-form").hidden = false;
    $("#key").focus();
  }

  function fail(error) {
    const box = $("#error");
    box.textContent = error.message;
    box.hidden = false;
    document.body.dataset.state = "error";
  }

  // -- colours and legend -----------------------------------------------------------

  const palette = [];
  function colour(topic) {
    if (topic < 0) return NO_TOPIC_COLOUR;
    while (palette.length <= topic) {
      const i = palette.length;
      const hue = (i * 137.508) % 360;   // golden angle: neighbours in the list get distant hues
      palette.push(`hsl(${hue.toFixed(1)}, ${i % 2 ? 55 : 70}%, ${[42, 55, 48][i % 3]}%)`);
    }
    return palette[topic];
  }

  // Near-duplicate served topics (same "group") share one legend entry, colour and name.
  function groupColumns() {
    const column = new Map(state.servedTopics.map((topic, i) => [topic.id, i]));
    return state.servedTopics.map((topic, i) => column.get(topic.group ?? topic.id) ?? i);
  }

  function topicsOfPoints() {
    if (state.colourBy === "own") return state.map.own_topics;
    if (state.groupedFor !== state.map.topics) {
      const group = groupColumns();
      state.groupedTopics = state.map.topics.map((t) => (t < 0 ? t : group[t] ?? t));
      state.groupedFor = state.map.topics;
    }
    return state.groupedTopics;
  }

  function topicNames() {
    if (state.colourBy === "own") return state.map.own_topic_names;
    const group = groupColumns();
    const members = state.servedTopics.map(() => []);
    state.servedTopics.forEach((topic, i) => members[group[i]].push(topic.name));
    return members.map((names) => names.join(" / "));
  }

  function renderLegend() {
    const topics = topicsOfPoints();
    const names = topicNames();
    const counts = new Map();
    for (const t of topics) counts.set(t, (counts.get(t) || 0) + 1);
    const legend = $("#legend");
    legend.replaceChildren();
    $("#legend-title").textContent = state.colourBy === "own"
      ? `Topics of ${state.map.label}` : "Served topics";
    const order = [...counts.keys()].sort((a, b) => counts.get(b) - counts.get(a));
    for (const topic of order) {
      const li = document.createElement("li");
      li.dataset.topic = topic;
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colour(topic);
      const name = document.createElement("span");
      name.textContent = topic < 0 ? "no topic" : (names[topic] || `topic ${topic}`);
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = counts.get(topic);
      li.append(swatch, name, count);
      li.addEventListener("click", () => {
        state.topic = state.topic === topic ? -1 : topic;
        for (const other of legend.children) other.classList.toggle("active", +other.dataset.topic === state.topic);
        requestDraw();
      });
      legend.append(li);
    }
  }

  function renderSwitch() {
    const nav = $("#representations");
    nav.replaceChildren();
    for (const r of state.map.representations) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.representation = r.id;
      button.textContent = r.label;
      button.disabled = !r.available;
      button.setAttribute("aria-pressed", String(r.id === state.map.representation));
      button.addEventListener("click", () => {
        if (r.id !== state.map.representation) load(r.id);
      });
      nav.append(button);
    }
  }

  // -- view ---------------------------------------------------------------------------

  function size() {
    const rect = canvas.getBoundingClientRect();
    return { width: rect.width, height: rect.height };
  }

  function fit() {
    const { width, height } = size();
    const n = state.xs.length;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < n; i++) {
      const x = state.xs[i], y = state.ys[i];
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
    if (!n) { x0 = y0 = -1; x1 = y1 = 1; }
    const pad = 32;
    const scale = Math.min((width - 2 * pad) / Math.max(x1 - x0, 1e-6), (height - 2 * pad) / Math.max(y1 - y0, 1e-6));
    state.view = { scale, tx: width / 2 - scale * (x0 + x1) / 2, ty: height / 2 - scale * (y0 + y1) / 2 };
    state.fitScale = scale;
  }

  function zoom(factor, cx, cy) {
    const v = state.view;
    const scale = Math.min(Math.max(v.scale * factor, state.fitScale / 4), state.fitScale * 400);
    const f = scale / v.scale;
    state.view = { scale, tx: cx - (cx - v.tx) * f, ty: cy - (cy - v.ty) * f };
    requestDraw();
  }

  // -- drawing ------------------------------------------------------------------------

  function requestDraw() {
    if (!state.drawQueued) {
      state.drawQueued = true;
      requestAnimationFrame(() => {
        state.drawQueued = false;
        draw();
      });
    }
  }

  function image(id) {
    let img = state.images.get(id);
    if (!img) {
      img = new Image();
      img.onload = requestDraw;
      showPhoto(img, id);
      state.images.set(id, img);
    }
    return img;
  }

  function draw() {
    if (!state.map) return;
    const dpr = window.devicePixelRatio || 1;
    const { width, height } = size();
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const { scale, tx, ty } = state.view;
    const { xs, ys, sx, sy } = state;
    const n = xs.length;
    const margin = PHOTO_SIZE;
    let visible = 0;
    for (let i = 0; i < n; i++) {
      sx[i] = xs[i] * scale + tx;
      sy[i] = ys[i] * scale + ty;
      if (sx[i] > -margin && sx[i] < width + margin && sy[i] > -margin && sy[i] < height + margin) visible++;
    }
    const topics = topicsOfPoints();
    const photos = $("#photos").checked && visible <= PHOTO_LIMIT;
    state.drawnPhotos = photos;
    const picked = state.topic;
    const dimmed = (i) => picked !== -1 && topics[i] !== picked;
    if (photos) {
      drawPhotos(width, height, topics, dimmed);
    } else {
      drawDots(width, height, topics, dimmed, n > 5000 ? 3 : 5);
    }
    for (const i of state.similar) ring(i, "#1d2329", 1.5);
    if (state.selected !== null && state.index.has(state.selected)) ring(state.index.get(state.selected), "#d0342c", 3);
    if (state.hover >= 0) ring(state.hover, "#1d2329", 2.5);
    state.grid = null;  // rebuilt on the next hover, from these screen positions
  }

  function drawDots(width, height, topics, dimmed, r) {
    const { sx, sy } = state;
    const buckets = new Map();
    for (let i = 0; i < sx.length; i++) {
      if (sx[i] < -r || sx[i] > width + r || sy[i] < -r || sy[i] > height + r) continue;
      const key = dimmed(i) ? -2 : topics[i];
      let bucket = buckets.get(key);
      if (!bucket) buckets.set(key, bucket = []);
      bucket.push(i);
    }
    const half = r / 2;
    for (const [topic, bucket] of buckets) {
      ctx.fillStyle = topic === -2 ? "rgba(154, 163, 171, 0.25)" : colour(topic);
      ctx.beginPath();
      for (const i of bucket) ctx.rect(sx[i] - half, sy[i] - half, r, r);
      ctx.fill();
    }
  }

  function drawPhotos(width, height, topics, dimmed) {
    const { sx, sy } = state;
    const half = PHOTO_SIZE / 2;
    for (let i = 0; i < sx.length; i++) {
      if (sx[i] < -half || sx[i] > width + half || sy[i] < -half || sy[i] > height + half) continue;
      ctx.globalAlpha = dimmed(i) ? 0.2 : 1;
      ctx.fillStyle = colour(topics[i]);
      ctx.fillRect(sx[i] - half - 2, sy[i] - half - 2, PHOTO_SIZE + 4, PHOTO_SIZE + 4);
      const img = state.map.photos[i] ? image(state.map.ids[i]) : null;
      if (img && img.complete && img.naturalWidth) {
        const s = Math.min(PHOTO_SIZE / img.naturalWidth, PHOTO_SIZE / img.naturalHeight);
        const w = img.naturalWidth * s, h = img.naturalHeight * s;
        ctx.fillStyle = "#fff";
        ctx.fillRect(sx[i] - half, sy[i] - half, PHOTO_SIZE, PHOTO_SIZE);
        ctx.drawImage(img, sx[i] - w / 2, sy[i] - h / 2, w, h);
      }
    }
    ctx.globalAlpha = 1;
  }

  function ring(i, stroke, width) {
    const radius = state.drawnPhotos ? PHOTO_SIZE / 2 + 4 : 6;
    ctx.strokeStyle = stroke;
    ctx.lineWidth = width;
    ctx.beginPath();
    if (state.drawnPhotos) {
      ctx.rect(state.sx[i] - radius, state.sy[i] - radius, 2 * radius, 2 * radius);
    } else {
      ctx.arc(state.sx[i], state.sy[i], radius, 0, 2 * Math.PI);
    }
    ctx.stroke();
  }

  // -- hit-testing: a grid of CELL-px cells over the points on screen ------------------

  function buildGrid() {
    const { width, height } = size();
    const cols = Math.ceil(width / CELL) + 1, rows = Math.ceil(height / CELL) + 1;
    const { sx, sy } = state;
    const cellOf = new Int32Array(sx.length);
    const start = new Int32Array(cols * rows + 1);
    for (let i = 0; i < sx.length; i++) {
      const c = Math.floor(sx[i] / CELL), r = Math.floor(sy[i] / CELL);
      cellOf[i] = c >= 0 && c < cols && r >= 0 && r < rows ? r * cols + c : -1;
      if (cellOf[i] >= 0) start[cellOf[i] + 1]++;
    }
    for (let k = 0; k < cols * rows; k++) start[k + 1] += start[k];
    const fill = start.slice(0, cols * rows);
    const items = new Int32Array(start[cols * rows]);
    for (let i = 0; i < sx.length; i++) if (cellOf[i] >= 0) items[fill[cellOf[i]]++] = i;
    return { cols, rows, start, items };
  }

  function pick(x, y) {
    if (!state.map) return -1;
    const grid = state.grid || (state.grid = buildGrid());
    const radius = state.drawnPhotos ? PHOTO_SIZE / 2 + 2 : 7;
    const span = Math.ceil(radius / CELL);
    const c0 = Math.floor(x / CELL), r0 = Math.floor(y / CELL);
    const topics = topicsOfPoints();
    let best = -1, bestDistance = radius * radius;
    for (let r = Math.max(0, r0 - span); r <= Math.min(grid.rows - 1, r0 + span); r++) {
      for (let c = Math.max(0, c0 - span); c <= Math.min(grid.cols - 1, c0 + span); c++) {
        const k = r * grid.cols + c;
        for (let j = grid.start[k]; j < grid.start[k + 1]; j++) {
          const i = grid.items[j];
          if (state.topic !== -1 && topics[i] !== state.topic) continue;
          const dx = state.sx[i] - x, dy = state.sy[i] - y;
          const d = state.drawnPhotos ? Math.max(dx * dx, dy * dy) : dx * dx + dy * dy;
          if (d <= bestDistance) { best = i; bestDistance = d; }
        }
      }
    }
    return best;
  }

  // -- tooltip and detail panel ----------------------------------------------------------

  function topicText(topics) {
    return topics.map((t) => t.name).join(" · ");
  }

  function tagText(tags) {
    return tags.map((t) => `${t.tag} ${Math.round(t.score * 100)}%`).join(", ");
  }

  function showTooltip(i, x, y) {
    const id = state.map.ids[i];
    const parts = [];
    if (state.map.photos[i]) {
      const img = document.createElement("img");
      img.alt = "";
      showPhoto(img, id);
      parts.push(img);
    }
    const title = document.createElement("div");
    title.className = "title";
    title.textContent = state.map.titles[i] || id;
    const tags = document.createElement("div");
    tags.className = "tags";
    const topics = document.createElement("div");
    topics.className = "topics";
    parts.push(title, tags, topics);
    tooltip.replaceChildren(...parts);
    tooltip.dataset.id = id;
    tooltip.hidden = false;
    placeTooltip(x, y);
    details(id).then((item) => {
      if (tooltip.dataset.id !== id) return;
      tags.textContent = `tags: ${tagText(item.tags)}`;
      topics.textContent = `topics: ${topicText(item.topics)}`;
    }, () => {});
  }

  function placeTooltip(x, y) {
    const { width, height } = size();
    const w = tooltip.offsetWidth, h = tooltip.offsetHeight;
    tooltip.style.left = `${x + 16 + w > width ? x - 16 - w : x + 16}px`;
    tooltip.style.top = `${Math.max(4, Math.min(y - h / 2, height - h - 4))}px`;
  }

  function hideTooltip() {
    tooltip.hidden = true;
    delete tooltip.dataset.id;
  }

  function markSimilar(ids) {
    state.lastSimilar = ids;
    state.similar = new Set(ids.filter((id) => state.index.has(id)).map((id) => state.index.get(id)));
  }

  async function select(id) {
    state.selected = id;
    markSimilar([]);
    const panel = $("#detail");
    panel.hidden = false;
    panel.dataset.id = id;
    const i = state.index.get(id);
    const photo = $("#detail-photo");
    photo.hidden = !(i !== undefined && state.map.photos[i]);
    photo.removeAttribute("src");
    if (!photo.hidden) showPhoto(photo, id);
    $("#detail-title").textContent = i !== undefined ? (state.map.titles[i] || id) : id;
    for (const field of ["#detail-meta", "#detail-tags", "#detail-topics"]) $(field).textContent = "";
    const list = $("#similar");
    list.replaceChildren();
    list.dataset.state = "loading";
    requestDraw();
    const encoded = encodeURIComponent(id);
    try {
      const [item, similar] = await Promise.all([details(id), getJSON(`/v1/items/${encoded}/similar?k=10`)]);
      if (state.selected !== id) return;
      $("#detail-meta").textContent = [item.kind, item.category, item.price != null ? `${item.price}` : ""]
        .filter(Boolean).join(" · ");
      $("#detail-tags").textContent = `tags: ${tagText(item.tags)}`;
      $("#detail-topics").textContent = `topics: ${topicText(item.topics)}`;
      for (const hit of similar.items) list.append(similarEntry(hit));
      markSimilar(similar.items.map((hit) => hit.id));
      list.dataset.state = "ready";
      requestDraw();
    } catch (error) {
      if (state.selected !== id) return;
      const li = document.createElement("li");
      li.textContent = error.message;
      list.append(li);
      list.dataset.state = "error";
    }
  }

  function similarEntry(hit) {
    const li = document.createElement("li");
    li.dataset.id = hit.id;
    const img = document.createElement("img");
    img.alt = "";
    const i = state.index.get(hit.id);
    if (i !== undefined && state.map.photos[i]) showPhoto(img, hit.id);
    const title = document.createElement("span");
    title.textContent = hit.title || hit.id;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(2);
    li.append(img, title, score);
    li.addEventListener("click", () => select(hit.id));
    return li;
  }

  function closeDetail() {
    state.selected = null;
    markSimilar([]);
    $("#detail").hidden = true;
    requestDraw();
  }

  // -- input ----------------------------------------------------------------------------

  function local(event) {
    const rect = canvas.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  let drag = null;
  canvas.addEventListener("pointerdown", (event) => {
    const [x, y] = local(event);
    drag = { x, y, tx: state.view.tx, ty: state.view.ty, moved: false };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!state.map) return;
    const [x, y] = local(event);
    if (drag) {
      if (Math.abs(x - drag.x) + Math.abs(y - drag.y) > 4) drag.moved = true;
      if (drag.moved) {
        canvas.classList.add("dragging");
        state.view = { ...state.view, tx: drag.tx + x - drag.x, ty: drag.ty + y - drag.y };
        hideTooltip();
        requestDraw();
        return;
      }
    }
    const i = pick(x, y);
    if (i !== state.hover) {
      state.hover = i;
      if (i >= 0) showTooltip(i, x, y); else hideTooltip();
      requestDraw();
    } else if (i >= 0) {
      placeTooltip(x, y);
    }
  });
  canvas.addEventListener("pointerup", (event) => {
    const wasClick = drag && !drag.moved;
    drag = null;
    canvas.classList.remove("dragging");
    if (!wasClick || !state.map) return;
    const [x, y] = local(event);
    const i = pick(x, y);
    if (i >= 0) select(state.map.ids[i]);
  });
  canvas.addEventListener("pointerleave", () => {
    if (drag) return;
    state.hover = -1;
    hideTooltip();
    requestDraw();
  });
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    const [x, y] = local(event);
    zoom(Math.exp(-event.deltaY * 0.0015), x, y);
  }, { passive: false });

  $("#reset").addEventListener("click", () => { fit(); requestDraw(); });
  $("#photos").addEventListener("change", requestDraw);
  $("#close-detail").addEventListener("click", closeDetail);
  $("#colour-by").addEventListener("change", (event) => {
    state.colourBy = event.target.value;
    state.topic = -1;
    renderLegend();
    requestDraw();
  });
  new ResizeObserver(() => {
    if (state.map) { fit(); draw(); }
  }).observe(canvas);

  // For people poking at the page from the console, and for the browser tests.
  window.vistasMap = {
    representation: null,
    count: 0,
    load,
    select,
    /** Where an item is drawn, in page coordinates (null when it is not on the map). */
    screenPosition(id) {
      const i = state.index.get(id);
      if (i === undefined) return null;
      const rect = canvas.getBoundingClientRect();
      return { x: rect.left + state.sx[i], y: rect.top + state.sy[i] };
    },
  };

  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("#key").value.trim());
    state.photos.clear();
    state.images.clear();
    $("#key-form").hidden = true;
    load(location.hash.slice(1) || null);
  });

  if (document.body.dataset.needsKey === "yes" && apiKey() === null) {
    askForKey("");
  } else {
    load(location.hash.slice(1) || null);
  }
})();
