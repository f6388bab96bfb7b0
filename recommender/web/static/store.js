// The storefront demo: a product grid from /v1/items, a product page with "similar" and
// "customers also viewed" rows, and a "for you" row from the user's recommendations that
// is asked again after every event the page sends. It holds no data of its own.
(() => {
  "use strict";

  const KEY_STORAGE = "vistas-api-key";      // per tab (sessionStorage), shared with the map page
  const USER_STORAGE = "vistas-store-user";  // the shopper, across visits (localStorage)
  const DEMO_USERS = ["ana", "ben", "chen"];
  const USER_ID = /^[A-Za-z0-9._:-]{1,128}$/;
  const PAGE = 24;   // grid items per request
  const ROW = 8;     // items per row (for you, similar, also viewed)

  const $ = (selector) => document.querySelector(selector);
  const state = {
    user: null,
    known: new Map(),     // item id -> the fields last seen of it (title, category, price, photo)
    photos: new Map(),    // item id -> Promise of a URL an <img> can show
    features: { also: false, dismiss: false },  // what this API offers, from /openapi.json
    offset: 0,
    product: null,        // the item id on the product page
    clicked: null,        // the item id whose card was just clicked (its page sends "click", not "view")
    carts: new Map(),     // user -> the item ids they added to the cart in this tab
    refreshes: 0,         // "for you" answers shown, for tests and for dropping stale answers
  };

  // -- the API ----------------------------------------------------------------------

  function apiKey() {
    return sessionStorage.getItem(KEY_STORAGE);
  }

  function authHeaders() {
    const key = apiKey();
    return key ? { "X-API-Key": key } : {};
  }

  /** A JSON request; errors carry the API's status and error code, and a refused key asks for another. */
  async function api(method, url, body) {
    const headers = authHeaders();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const data = response.status === 204 ? null : await response.json();
    if (!response.ok) {
      const error = new Error(data && data.error ? data.error.message : response.statusText);
      error.status = response.status;
      error.code = data && data.error && data.error.code;
      if (error.code === "unauthorized" || error.code === "forbidden") askForKey(error.message);
      throw error;
    }
    return data;
  }

  const itemURL = (id, rest = "") => `/v1/items/${encodeURIComponent(id)}${rest}`;
  const userURL = (rest = "") => `/v1/users/${encodeURIComponent(state.user)}${rest}`;

  function remember(items) {
    for (const item of items) state.known.set(item.id, { ...state.known.get(item.id), ...item });
    return items;
  }

  /** The thumbnail as an <img> src: its URL, or with an API key a blob URL (<img> cannot send headers). */
  function photoURL(id) {
    if (!state.photos.has(id)) {
      const url = itemURL(id, "/thumbnail");
      state.photos.set(id, apiKey() === null ? Promise.resolve(url)
        : fetch(url, { headers: authHeaders() })
          .then((response) => (response.ok ? response.blob() : Promise.reject(new Error(response.statusText))))
          .then((blob) => URL.createObjectURL(blob)));
    }
    return state.photos.get(id);
  }

  /** What the API offers beyond the basics ("also viewed", "not interested"): asked once, never guessed by 404s. */
  async function discover() {
    const spec = await api("GET", "/openapi.json");
    const event = spec.components.schemas.Event;
    state.features.also = "/v1/items/{item_id}/also" in spec.paths;
    state.features.dismiss = event.properties.type.enum.includes("dismiss");
  }

  // -- cards and reasons ------------------------------------------------------------

  function price(value) {
    if (typeof value !== "number") return "";
    return value.toLocaleString("en", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }

  function title(id) {
    const item = state.known.get(id);
    return item && item.title ? item.title : id;
  }

  function category(item) {
    return (item.category || item.kind || "").replace(/_/g, " ");
  }

  /** Why a result is here, in a line: the API's own sentence when it writes one, else one made from its parts
   * (a topic's name is its distinctive tags, so one topic says enough). */
  function reasonText(reasons, forUser) {
    if (!reasons) return "";
    if (reasons.text) return reasons.text;
    const tags = (reasons.tags || []).slice(0, 3);
    const topic = reasons.topics && reasons.topics.length ? `shared topic: ${reasons.topics[0].name}` : "";
    const shared = tags.length ? `shared tags: ${tags.join(", ")}` : topic;
    if (!forUser) return shared;
    if (reasons.popular) return "popular right now";
    if (reasons.because_of && reasons.because_of.length) {
      return `because you viewed ${title(reasons.because_of[0])}${shared ? ` — ${shared}` : ""}`;
    }
    return shared ? `close to what you viewed — ${shared}` : "";
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  function photo(item) {
    const known = state.known.get(item.id);
    if (known && known.photo === false) return el("div", "photo none", "no photo");
    const img = el("img", "photo");
    img.alt = "";
    img.loading = "lazy";
    photoURL(item.id).then((url) => { img.src = url; }, () => img.classList.add("none"));
    return img;
  }

  /** A product card; ``options.reason`` adds the result's reason (said to the shopper when ``options.forUser``),
   * ``options.dismiss`` a "not interested" button. */
  function card(item, options = {}) {
    const li = el("li", "card");
    li.dataset.id = item.id;
    if (item.reasons && item.reasons.source) li.dataset.source = item.reasons.source;
    const open = el("a", "open");
    open.href = `#item=${encodeURIComponent(item.id)}`;
    open.addEventListener("click", () => { state.clicked = item.id; });
    open.append(photo(item), el("span", "title", item.title || item.id));
    const meta = [category(item), price(item.price)].filter(Boolean).join(" · ");
    if (meta) open.append(el("span", "meta", meta));
    li.append(open);
    if (options.reason) {
      const line = reasonText(item.reasons, options.forUser);
      if (line) {
        const reason = li.appendChild(el("p", "reason"));
        reason.append(el("span", "", line));
        reason.title = line;  // the whole line, where the card cuts it short
      }
    }
    if (options.dismiss) {
      const button = el("button", "dismiss", "Not interested");
      button.type = "button";
      button.addEventListener("click", () => dismiss(item.id, li));
      li.append(button);
    }
    return li;
  }

  function fill(list, items, options, empty) {
    list.replaceChildren(...items.map((item) => card(item, options)));
    if (!items.length) list.append(el("li", "empty", empty));
    list.dataset.state = "ready";
  }

  function showError(list, error) {
    list.replaceChildren(el("li", "empty", `could not load: ${error.message}`));
    list.dataset.state = "error";
  }

  // -- the rows ---------------------------------------------------------------------

  async function loadGrid(more) {
    const grid = $("#grid");
    if (!more) state.offset = 0;
    grid.dataset.state = "loading";
    try {
      const page = await api("GET", `/v1/items?limit=${PAGE}&offset=${state.offset}`);
      remember(page.items);
      const cards = page.items.map((item) => card(item));
      if (more) grid.append(...cards); else grid.replaceChildren(...cards);
      state.offset += page.items.length;
      $("#catalog-count").textContent = `(${page.total.toLocaleString()})`;
      $("#more").hidden = state.offset >= page.total;
      grid.dataset.state = "ready";
      document.body.dataset.state = "ready";
    } catch (error) {
      showError(grid, error);
      if (document.body.dataset.state !== "key") document.body.dataset.state = "error";
    }
  }

  /** The user's recommendations, with the titles their reasons name; a later answer wins over an earlier one.
   * The product on screen and the cart's items are left out: the shopper has them already. */
  async function loadForYou() {
    const list = $("#for-you");
    const asked = ++state.refreshes;
    const user = state.user;
    const exclude = [...new Set([state.product, ...(state.carts.get(user) || [])].filter(Boolean))];
    const query = `k=${ROW}${exclude.length ? `&exclude=${exclude.map(encodeURIComponent).join(",")}` : ""}`;
    list.dataset.state = "loading";
    try {
      const answer = await api("GET", userURL(`/recommendations?${query}`));
      const named = answer.items.flatMap((r) => (r.reasons && r.reasons.because_of) || []);
      await Promise.all([...new Set(named)].filter((id) => !state.known.has(id))
        .map((id) => api("GET", itemURL(id)).then((item) => remember([item]), () => {})));
      if (asked !== state.refreshes || user !== state.user) return;
      const options = { reason: true, forUser: true, dismiss: state.features.dismiss };
      fill(list, remember(answer.items), options, "nothing to recommend yet");
      list.dataset.refresh = String(asked);
      list.dataset.user = user;
    } catch (error) {
      if (asked === state.refreshes) showError(list, error);
    }
  }

  /** One of the product page's rows; an answer for a product no longer on screen is dropped. */
  async function loadRow(list, id, url, empty) {
    list.dataset.state = "loading";
    list.replaceChildren();
    try {
      const answer = await api("GET", url);
      if (state.product === id) fill(list, remember(answer.items), { reason: true }, empty);
    } catch (error) {
      if (state.product === id) showError(list, error);
      throw error;
    }
  }

  // -- the product page -------------------------------------------------------------

  async function showProduct(id) {
    state.product = id;
    $("#product").hidden = false;
    $("#catalog").hidden = true;
    $("#product-title").textContent = title(id);
    $("#product-category").textContent = $("#product-price").textContent = $("#product-tags").textContent = "";
    $("#add-to-cart").textContent = "Add to cart";
    $("#product-photo").removeAttribute("src");
    window.scrollTo(0, 0);
    photoURL(id).then((url) => { if (state.product === id) $("#product-photo").src = url; }, () => {});
    send(state.clicked === id ? "click" : "view", id);
    state.clicked = null;
    const rows = [loadRow($("#similar"), id, itemURL(id, `/similar?k=${ROW}`), "no similar items").catch(() => {})];
    $("#also-block").hidden = !state.features.also;
    if (state.features.also) {
      rows.push(loadRow($("#also"), id, itemURL(id, `/also?k=${ROW}`), "no one has viewed it with others yet")
        .catch((error) => {  // a route the description promised but this process lacks: leave the row out
          if (error.status === 404 && error.code !== "item_not_found") $("#also-block").hidden = true;
        }));
    }
    try {
      const item = remember([await api("GET", itemURL(id))])[0];
      if (state.product !== id) return;
      $("#product-title").textContent = item.title || item.id;
      $("#product-category").textContent = category(item);
      $("#product-price").textContent = price(item.price);
      $("#product-tags").textContent = item.tags.slice(0, 6).map((t) => t.tag).join(" · ");
    } catch (error) {
      if (state.product === id) $("#product-title").textContent = `${id}: ${error.message}`;
    }
    await Promise.all(rows);
  }

  function showCatalog() {
    state.product = null;
    $("#product").hidden = true;
    $("#catalog").hidden = false;
  }

  function route() {
    const match = location.hash.match(/^#item=(.+)$/);
    if (match) showProduct(decodeURIComponent(match[1]));
    else showCatalog();
  }

  // -- events, users ----------------------------------------------------------------

  /** Record one event, then ask for the "for you" row again (it answers to every event). */
  async function send(type, id) {
    try {
      await api("POST", userURL("/events"), { item_id: id, type });
    } catch (error) {
      notify(`could not record ${type}: ${error.message}`);
      return;
    }
    await loadForYou();
  }

  async function dismiss(id, li) {
    li.classList.add("dismissed");
    await send("dismiss", id);
  }

  function updateCart() {
    $("#cart").textContent = `cart: ${(state.carts.get(state.user) || []).length}`;
  }

  function notify(text) {
    const box = $("#notice");
    box.textContent = text;
    box.hidden = !text;
  }

  function switchUser(user) {
    if (!USER_ID.test(user)) {
      notify(`"${user}" is not a user id: letters, digits and . _ : - only`);
      return;
    }
    state.user = user;
    localStorage.setItem(USER_STORAGE, user);
    $("#user").value = DEMO_USERS.includes(user) ? "" : user;
    $("#for-you-user").textContent = user;
    document.body.dataset.user = user;
    for (const button of document.querySelectorAll("#demo-users button")) {
      button.setAttribute("aria-pressed", String(button.dataset.user === user));
    }
    notify("");
    updateCart();
    loadForYou();
  }

  async function forget() {
    const user = state.user;
    try {
      await api("DELETE", userURL());
    } catch (error) {
      notify(`could not forget ${user}: ${error.message}`);
      return;
    }
    state.carts.delete(user);
    updateCart();
    notify(`Forgot ${user}: their events and profile are gone.`);
    await loadForYou();
  }

  // -- start ------------------------------------------------------------------------

  function askForKey(message) {
    document.body.dataset.state = "key";
    $("#key-error").textContent = message;
    $("#key-form").hidden = false;
    $("#key").focus();
  }

  async function start() {
    document.body.dataset.state = "loading";
    try {
      await discover();
    } catch (error) {
      if (document.body.dataset.state !== "key") {
        notify(`API description unavailable (${error.message}); basic rows only`);
      }
    }
    switchUser(state.user);
    await loadGrid(false);
    route();
  }

  for (const user of DEMO_USERS) {
    const button = el("button", "user", user);
    button.type = "button";
    button.dataset.user = user;
    button.addEventListener("click", () => switchUser(user));
    $("#demo-users").append(button);
  }
  $("#user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if ($("#user").value.trim()) switchUser($("#user").value.trim());
  });
  $("#forget").addEventListener("click", forget);
  $("#add-to-cart").addEventListener("click", async () => {
    const id = state.product;
    state.carts.set(state.user, [...(state.carts.get(state.user) || []), id]);
    updateCart();
    $("#add-to-cart").textContent = "Added ✓";
    await send("add_to_cart", id);
  });
  $("#back").addEventListener("click", () => { location.hash = ""; });
  $("#home").addEventListener("click", (event) => { event.preventDefault(); location.hash = ""; });
  $("#more").addEventListener("click", () => loadGrid(true));
  window.addEventListener("hashchange", route);
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("#key").value.trim());
    state.photos.clear();
    $("#key-error").textContent = "";
    $("#key-form").hidden = true;
    start();
  });

  state.user = localStorage.getItem(USER_STORAGE) || DEMO_USERS[0];
  if (!USER_ID.test(state.user)) state.user = DEMO_USERS[0];
  window.vistasStore = state;
  if (document.body.dataset.needsKey === "yes" && apiKey() === null) askForKey("");
  else start();
})();
