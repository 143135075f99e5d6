#!/usr/bin/env python3
"""A real-browser test: two headless Chromium sessions open the chat through portico, land on different
nodes, join "lobby", and a message typed in one appears in the other. Uses the release binaries and the same
topology as `make demo` (Redis + three chat nodes + portico), on free loopback ports."""
import os, shutil, signal, socket, subprocess, sys, time, urllib.request

# Never let Selenium Manager go online (no downloads, no statistics): use Debian's chromium and chromedriver.
os.environ["SE_AVOID_STATS"] = "true"
os.environ["SE_OFFLINE"] = "true"

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
passed, failed = 0, 0


def check(name, condition):
    global passed, failed
    if condition:
        passed += 1
        print("ok  ", name)
    else:
        failed += 1
        print("FAIL", name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser():
    options = Options()
    options.add_argument("--headless=new")
    options.add_argument("--no-sandbox")
    options.add_argument("--disable-dev-shm-usage")
    options.add_argument("--window-size=1100,720")
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(options=options, service=service)


def connected_node(driver):
    WebDriverWait(driver, 15).until(lambda d: "connected to" in d.find_element(By.ID, "status").text)
    return driver.find_element(By.ID, "status").text.split()[-1]


def main():
    ports = {name: free_port() for name in ("DEMO_PORT", "DEMO_ADMIN_PORT", "DEMO_REDIS_PORT")}
    env = dict(os.environ, **{k: str(v) for k, v in ports.items()})
    env["DEMO_NODE_PORTS"] = " ".join(str(free_port()) for _ in range(3))
    demo = subprocess.Popen(["scripts/demo.sh"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    drivers = []
    try:
        url = f"http://127.0.0.1:{ports['DEMO_PORT']}/"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(url + "healthz", timeout=1).status == 200:
                    break
            except Exception:
                time.sleep(0.2)
        a = browser()
        drivers.append(a)
        a.get(url)
        node_a = connected_node(a)
        node_b, b = None, None
        for _ in range(12):  # a new session gets a new client id; retry until it lands elsewhere
            b = browser()
            b.get(url)
            node_b = connected_node(b)
            if node_b != node_a:
                break
            b.quit()
        drivers.append(b)
        check(f"two sessions on different nodes ({node_a}, {node_b})", node_a != node_b)
        for driver, name in ((a, "alice"), (b, "bob")):
            field = driver.find_element(By.ID, "name")
            field.clear()
            field.send_keys(name)
            driver.find_element(By.ID, "room").send_keys("lobby")
            driver.find_element(By.CSS_SELECTOR, "#joinForm button").click()
        for driver in (a, b):
            WebDriverWait(driver, 10).until(lambda d: "2 online" in d.find_element(By.ID, "rooms").text)
        check("both see 2 members online in lobby", True)
        a.find_element(By.ID, "text").send_keys("hello from alice")
        a.find_element(By.ID, "send").click()
        WebDriverWait(b, 10).until(lambda d: "hello from alice" in d.find_element(By.ID, "log").text)
        log = b.find_element(By.ID, "log").text
        check("bob sees alice's message", "hello from alice" in log)
        check(f"it came through alice's node ({node_a})", f"via {node_a}" in log)
        os.makedirs(os.path.join(ROOT, "run"), exist_ok=True)
        b.save_screenshot(os.path.join(ROOT, "run", "screenshot.png"))  # docs/screenshot.png is a copy of one
    except Exception as error:  # a timeout or a missing element is a failure, not a crash
        check(f"browser flow ({type(error).__name__}: {error})", False)
    finally:
        for driver in drivers:
            try:
                driver.quit()
            except Exception:
                pass
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
    print(f"\nbrowser: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
